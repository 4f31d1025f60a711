"""The watcher actor: the part of the watcher that must not run on the loop.

The aiohttp app lives on the agent's one loop and must never block it. Two jobs of the watcher
would: reading cgroup and /proc files for usage figures, and stopping the agent (which waits
for actors and for the loop itself). Both happen here, on the actor's own pykka thread:

- :class:`Sample` (sent by the loop every few seconds with the live kernels' containers):
  read the files, turn counters into rates, and hand the resulting :class:`Usage` back to the
  loop with ``call_soon`` (the loop side only ever holds immutable snapshots);
- :class:`ShutdownAgent`: stop the agent once, on a thread of its own (``AgentService.stop()``
  stops every actor, this one included, so it cannot run on this actor's thread).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pykka

from kernlet.actors.loop import LoopThread
from kernlet.watcher._usage import Usage, UsageTracker

__all__ = ["Sample", "ShutdownAgent", "WatcherActor"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sample:
    """Read usage now."""

    #: kernel id -> container id of every live kernel that has a container
    containers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ShutdownAgent:
    """An operator asked the agent to exit (kernels keep running)."""

    #: who asked, for the log (the client's address)
    requested_by: str = ""


class WatcherActor(pykka.ThreadingActor):
    """Samples usage and stops the agent on request, off the loop."""

    def __init__(
        self,
        loop: LoopThread,
        tracker: UsageTracker,
        publish: Callable[[Usage], None],
        stop_agent: Callable[[], None],
    ) -> None:
        super().__init__()
        self._loop = loop
        self._tracker = tracker
        self._publish = publish
        self._stop_agent = stop_agent
        self._stopping = False

    def on_start(self) -> None:
        """Runs on the actor's thread before any message; raising stops the actor unstarted."""
        log.debug("watcher actor started")

    def on_stop(self) -> None:
        """Runs on the actor's thread after the last message (``stop()`` or registry stop_all).

        Nothing to release: the loop side owns the HTTP server and closes it itself.
        """
        log.debug("watcher actor stopped")

    def on_failure(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        """Runs on the actor's thread when a handler raised; the actor is dead afterwards.

        The HTTP side keeps serving with the last usage sample; telling a dead actor raises
        ``ActorDeadError``, which the loop side ignores.
        """
        log.error("watcher actor died: %s: %s", getattr(exc_type, "__name__", exc_type), exc_value)

    def on_receive(self, message: Any) -> Any:
        match message:
            case Sample():
                usage = self._tracker.sample(message.containers)
                try:
                    self._loop.call_soon(self._publish, usage)
                except RuntimeError:  # the loop is closed: the agent is going away
                    pass
            case ShutdownAgent():
                self._shutdown(message.requested_by)
            case _:
                log.warning("watcher: unknown message %r", message)
        return None

    def _shutdown(self, who: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.warning("shutdown requested over the watcher by %s: the agent exits, kernels keep "
                    "running", who or "an operator")
        # not a daemon: the process must not end half-way through the agent's stop
        threading.Thread(target=self._stop_agent, name="kernlet-watcher-shutdown").start()
