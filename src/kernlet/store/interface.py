"""The event log's interface, and replay as a fold.

The log holds one stream per kernel (and the agent's own stream, ``_agent``), each a gap-free
sequence of envelopes from seq 1. It is also the outbox: every event starts undelivered and is
marked delivered once the manager acknowledged it. Both implementations,
:class:`~kernlet.store.memory.MemoryEventLog` and
:class:`~kernlet.store.sqlite.SQLiteEventLog`, pass one contract test suite.

Threads and loops: a log is opened, used and closed on one asyncio loop (kernlet's single
loop thread). Its methods are coroutines that never block that loop. Actors on other threads
reach it by handing coroutines to the loop, never by calling it directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from kernlet.events.lifecycle import KernelState, apply
from kernlet.events.types import AGENT_STREAM, Envelope

__all__ = ["EventLog", "fold"]


@runtime_checkable
class EventLog(Protocol):
    """What kernlet needs from its event log. Every method raises StoreClosed when not open."""

    @property
    def commits(self) -> int:
        """How many write transactions committed since this object was made (group commit)."""
        ...

    async def open(self) -> None:
        """Make the log ready (create or check the storage). Raises SchemaTooNew."""
        ...

    async def close(self) -> None:
        """Finish the writes already submitted, then release everything. Safe to call twice."""
        ...

    async def append(self, envs: Sequence[Envelope], *, lazy: bool = False) -> None:
        """Append envelopes atomically; durable when this returns.

        Each envelope's seq must be the next of its stream, and each kernel event must be
        allowed by the lifecycle table from the kernel's state; all of them are written, or
        none. Raises SequenceConflict, DuplicateEvent, IllegalTransition, CodecError. Concurrent
        calls are grouped into one transaction; a failing call does not fail the others. If the
        caller is cancelled after the call began, the append may still be written. A ``lazy``
        append (one nothing waits on: execution events) may wait a few milliseconds
        (``kernlet.store.batch.LAZY_DELAY``) to share a transaction with the appends after it.
        """
        ...

    async def read_stream(self, kernel_id: str, after_seq: int = 0) -> list[Envelope]:
        """The stream's envelopes with seq > after_seq, in order (empty for an unknown id)."""
        ...

    async def kernel_ids(self) -> list[str]:
        """Ids of every kernel with a stream, terminated ones too, sorted; not ``_agent``."""
        ...

    async def live_kernels(self) -> dict[str, KernelState]:
        """Replayed state of every kernel that has not terminated, by kernel id."""
        ...

    async def all_kernels(self) -> dict[str, KernelState]:
        """Replayed state of every kernel, terminated ones too, by kernel id (one read of
        every stream in order: the full fold)."""
        ...

    async def last_seq(self, kernel_id: str) -> int:
        """Seq of the stream's last committed envelope; 0 for an unknown stream."""
        ...

    async def undelivered(self, limit: int = 1000) -> list[Envelope]:
        """Envelopes not yet marked delivered, of every stream, oldest first."""
        ...

    async def mark_delivered(self, event_ids: Iterable[str]) -> None:
        """Mark events delivered; unknown ids are ignored. Durable when this returns."""
        ...

    async def count(self) -> int:
        """Number of envelopes in the log."""
        ...

    async def size_bytes(self) -> int:
        """Bytes the log takes in its storage."""
        ...

    async def undelivered_count(self) -> int:
        """Number of envelopes not yet marked delivered."""
        ...


def fold(events: Iterable[Envelope]) -> dict[str, KernelState]:
    """Replay: fold each kernel's envelopes, in order, into its state. Pure.

    Envelopes of several kernels may be interleaved; each kernel's must come in seq order.
    Agent-wide envelopes (stream ``_agent``) are skipped. Raises IllegalTransition.
    """
    states: dict[str, KernelState] = {}
    for env in events:
        if env.kernel_id != AGENT_STREAM:
            states[env.kernel_id] = apply(states.get(env.kernel_id), env)
    return states
