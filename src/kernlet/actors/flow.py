"""Flow control of a streaming ``execute``: the caller's credit, on the agent's loop.

A caller that asks for it (``execute`` with ``credit: N``) may have at most N bytes of output
messages published to it and not yet acknowledged. It acknowledges with ``ack_output``
(``{kernel_id, run_id, received}``: the bytes of output message bodies it has *processed* in
this call, cumulative, so a lost or repeated ack does no harm). While the window is full the
streaming sink waits; the run's output then piles up in the :class:`RunBook` up to
``limits.run-output-buffer``, where the runtime channel pauses, and the in-container runtime
holds it back (a batch command is slowed; query output past the runtime's own buffer is
dropped with a note). So a slow reader slows the run instead of losing messages in its NATS
subscription.

A caller that stops acknowledging (gone, or stuck) must not hold the kernel forever: after
:data:`STALL_TIMEOUT` seconds without an ack while the window is full, the flow is abandoned
and the rest of the call is published without credit (the behaviour of a caller that asked
for none), with a warning in the log.

Sequence of one call::

    caller                                 agent
      execute {stream, credit: W} ───────►
                                  ◄─────── output (n1 bytes)   sent = n1
                                  ◄─────── output (n2 bytes)   sent = n1 + n2 ... < W
      ack_output {received: n1} ─────────► window opens by n1
                                  ◄─────── ... final reply {result}
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ["STALL_TIMEOUT", "Flows", "OutputFlow"]

log = logging.getLogger(__name__)

#: seconds a full window waits for an ack before the caller is taken for gone
STALL_TIMEOUT = 30.0


class OutputFlow:
    """The credit of one streaming call. Loop-only."""

    def __init__(self, credit: int, stall_timeout: float = STALL_TIMEOUT) -> None:
        self.credit = credit
        self.stall_timeout = stall_timeout
        #: bytes of output message bodies published to the caller in this call
        self.sent = 0
        #: the highest ``received`` the caller acknowledged
        self.received = 0
        #: the caller stopped acknowledging: publish without waiting
        self.abandoned = False
        #: times the sink waited for credit (for tests and logs)
        self.waits = 0
        self._opened = asyncio.Event()

    def ack(self, received: int) -> None:
        """The caller processed ``received`` bytes in all; acks that go back are ignored."""
        if received > self.received:
            self.received = min(received, self.sent)
            self._opened.set()

    @property
    def open(self) -> bool:
        return self.abandoned or self.sent - self.received < self.credit

    async def wait(self) -> None:
        """Return when a message may be published (or the flow was abandoned)."""
        while not self.open:
            self.waits += 1
            self._opened.clear()
            try:
                await asyncio.wait_for(self._opened.wait(), self.stall_timeout)
            except TimeoutError:
                self.abandoned = True
                log.warning("streaming caller acknowledged nothing for %g s (%d of %d bytes "
                            "acknowledged): sending on without flow control",
                            self.stall_timeout, self.received, self.sent)

    def published(self, size: int) -> None:
        self.sent += size


class Flows:
    """The flows of the streaming calls in progress, by (kernel id, run id)."""

    def __init__(self) -> None:
        self._flows: dict[tuple[str, str], OutputFlow] = {}

    def open(self, kernel_id: str, run_id: str, credit: int) -> OutputFlow:
        flow = OutputFlow(credit)
        self._flows[(kernel_id, run_id)] = flow
        return flow

    def close(self, kernel_id: str, run_id: str, flow: OutputFlow) -> None:
        if self._flows.get((kernel_id, run_id)) is flow:
            del self._flows[(kernel_id, run_id)]

    def ack(self, kernel_id: str, run_id: str, received: int) -> bool:
        """Apply an ack; False when no call of that run streams now (a late ack)."""
        flow = self._flows.get((kernel_id, run_id))
        if flow is None:
            return False
        flow.ack(received)
        return True

    def __len__(self) -> int:
        return len(self._flows)
