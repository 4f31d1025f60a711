"""The one helper for the agent's periodic loops (heartbeat, relist, stats, watcher ticks)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["every"]

log = logging.getLogger(__name__)


async def every(
    interval: float | Callable[[], float],
    tick: Callable[[], Awaitable[None]],
    name: str = "",
    stop_on: tuple[type[BaseException], ...] = (),
) -> None:
    """Await ``tick()`` every ``interval`` seconds (from one start to the next; a callable is
    read each round, so a changed setting applies at once), until cancelled.

    An exception in one round is logged with its traceback and the loop goes on (one bad
    round must not end a periodic duty); one of ``stop_on`` ends the loop quietly."""
    loop = asyncio.get_running_loop()
    what = name or getattr(tick, "__name__", repr(tick))
    while True:
        started = loop.time()
        try:
            await tick()
        except asyncio.CancelledError:
            raise
        except stop_on:
            return
        except Exception:
            log.exception("periodic %s failed", what)
        wait = interval() if callable(interval) else interval
        await asyncio.sleep(max(0.0, wait - (loop.time() - started)))
