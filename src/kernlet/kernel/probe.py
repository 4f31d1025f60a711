"""Is the ipykernel ready? The readiness probe of a (re)start, and what it has seen.

:class:`QueryEngine` sends a ``kernel_info_request`` once a second and hands every shell and
iopub message it reads to the probe. The kernel is ready when *some* kernel_info of this start
has been answered on shell and *some* status message of one of them has arrived on iopub: the
second proves the iopub subscription is live (a late-joining SUB socket would lose the first
run's output). Any probe counts, not only the latest: a kernel on a small cpu share may
answer each request after its second has passed, and waiting for the latest one only would
then never end (jupyter_client's ``wait_for_ready`` matches any of its requests too).

:class:`StartProgress` counts what was seen; the runtime's status and log say it, and the
agent names it in the error of a kernel that was not ready in time: "0 answered, 0 iopub"
(the kernel never read its requests) reads differently from "0 answered, 40 iopub" (the
replies were lost on the way back).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from kernlet.layout import describe_start

__all__ = ["ReadinessProbe", "StartProgress"]


@dataclass
class StartProgress:
    """What the readiness probe of one (re)start has seen of the ipykernel so far."""

    started: float = field(default_factory=time.monotonic)
    #: kernel_info requests sent, and the replies to them (at any time)
    sent: int = 0
    answered: int = 0
    #: messages read on iopub, and the status messages among them for a kernel_info
    iopub: int = 0
    iopub_ours: int = 0
    #: times the client's channels were closed and opened again (see QueryEngine)
    reconnects: int = 0

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def heard(self) -> bool:
        """Whether anything at all came back from the kernel."""
        return self.answered > 0 or self.iopub > 0

    def describe(self) -> str:
        return describe_start(self.as_dict())

    def as_dict(self) -> dict[str, int | float]:
        return {
            "seconds": round(self.seconds, 1),
            "sent": self.sent,
            "answered": self.answered,
            "iopub": self.iopub,
            "iopub_ours": self.iopub_ours,
            "reconnects": self.reconnects,
        }


class ReadinessProbe:
    """The kernel_info requests of one (re)start and whether they have proved it ready.

    Loop-only: every method runs on the runtime's event loop.
    """

    def __init__(self) -> None:
        self.progress = StartProgress()
        self._ids: set[str] = set()
        self._ready = asyncio.Event()

    def sent(self, msg_id: str) -> None:
        self._ids.add(msg_id)
        self.progress.sent += 1

    def on_shell(self, parent: str) -> bool:
        """A shell message whose parent is ``parent``; True if it answered a probe."""
        if parent not in self._ids:
            return False
        self.progress.answered += 1
        self._check()
        return True

    def on_iopub(self, parent: str | None, kind: str) -> None:
        self.progress.iopub += 1
        if kind == "status" and parent in self._ids:
            self.progress.iopub_ours += 1
            self._check()

    def _check(self) -> None:
        if self.progress.answered and self.progress.iopub_ours:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait(self, timeout: float) -> bool:
        """Whether the kernel proved ready within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True
