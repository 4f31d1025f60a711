"""Following a kernel container's log from the manager side, the way ``kubectl logs -f``
does, over the one ``get_logs`` command: the last lines first, then a poll for lines logged
since the last one seen (``since`` + ``timestamps``). Docker's ``since`` is inclusive and
the epoch float sent is coarser than its nanosecond times, so each poll asks from a moment
before the last line and drops the lines already handed over, by (time, text)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kernlet.errors import KernelNotFound, KernelNotRunning

if TYPE_CHECKING:
    from kernlet.client import KernletClient

__all__ = ["epoch", "follow_logs"]

#: seconds before the last line seen that the next poll starts from
OVERLAP = 0.001


def epoch(stamp: str) -> float:
    """Epoch seconds of one of Docker's RFC 3339 log times (``...T04:45:01.123456789Z``);
    0 for anything else."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    try:
        base = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0
    return base + float(f"0.{frac[:9]}") if frac.isdigit() else base


async def follow_logs(client: KernletClient, kernel_id: str, tail: int = 1000,
                      interval: float = 1.0) -> AsyncIterator[tuple[str, str]]:
    """``(time, line)`` pairs: the last ``tail`` lines, then the new ones as they come, until
    the kernel is gone (KernelNotFound or KernelNotRunning end the iteration)."""
    seen: set[tuple[str, str]] = set()
    since: float | None = None
    while True:
        args: dict[str, Any] = {"kernel_id": kernel_id, "timestamps": True,
                                "tail": tail if since is None else 100_000}
        if since is not None:
            args["since"] = since
        try:
            answer = await client.call("get_logs", **args)
        except (KernelNotFound, KernelNotRunning):
            return
        if answer.get("kept"):  # terminated: what was kept at its teardown, no more to come
            if since is None:  # nothing was shown yet: show it (it has no times)
                for line in str(answer["logs"]).splitlines(keepends=True):
                    yield "", line
            return
        text = str(answer["logs"])
        fresh = []
        for raw in text.splitlines(keepends=True):
            stamp, _, line = raw.partition(" ")
            if (stamp, line) not in seen:
                fresh.append((stamp, line))
        for stamp, line in fresh:
            yield stamp, line
        if fresh:
            since = max(0.0, epoch(fresh[-1][0]) - OVERLAP)
            seen = {(st, ln) for st, ln in (*seen, *fresh) if epoch(st) >= since}
        await asyncio.sleep(interval)
