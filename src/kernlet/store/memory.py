"""The event log in memory, for tests and tools.

It keeps encoded records like the SQLite log does, and decodes them on every read, so both
behave alike down to the codec; it shares the SQLite log's group commit and validation. Its
contents live as long as the object: ``close()`` then ``open()`` finds them again, as a file
would.
"""

from __future__ import annotations

from kernlet.events.lifecycle import KernelState, is_live
from kernlet.events.types import AGENT_STREAM, Envelope
from kernlet.store.batch import (
    GroupCommitter,
    MarkDelivered,
    Request,
    StreamHead,
    WriteFront,
    stage_all,
)
from kernlet.store.errors import StoreClosed
from kernlet.store.interface import fold
from kernlet.store.records import Record, to_envelope

__all__ = ["MemoryEventLog"]


class MemoryEventLog(WriteFront):
    """An :class:`~kernlet.store.interface.EventLog` held in memory."""

    _writer: GroupCommitter

    def __init__(self, max_batch: int = 1024) -> None:
        self._records: list[Record] = []
        self._streams: dict[str, list[Record]] = {}
        self._heads: dict[str, StreamHead] = {}
        #: event ids not yet delivered, oldest first (a dict keeps insertion order)
        self._undelivered: dict[str, Record] = {}
        self._ids: set[str] = set()
        self._bytes = 0
        self._writer = GroupCommitter(self._commit, max_batch)

    async def open(self) -> None:
        if not self._writer.running:
            self._writer.start()

    async def close(self) -> None:
        await self._writer.stop()

    async def read_stream(self, kernel_id: str, after_seq: int = 0) -> list[Envelope]:
        self._check_open()
        await self._writer.settle()  # what was appended lazily before this read, too
        records = self._streams.get(kernel_id, [])
        return [to_envelope(rec) for rec in records[max(after_seq, 0) :]]

    async def kernel_ids(self) -> list[str]:
        self._check_open()
        return sorted(k for k in self._streams if k != AGENT_STREAM)

    async def live_kernels(self) -> dict[str, KernelState]:
        self._check_open()
        live = [k for k, head in self._heads.items() if is_live(head.state)]
        states = fold(to_envelope(rec) for k in live for rec in self._streams[k])
        return {k: state for k, state in states.items() if is_live(state)}

    async def all_kernels(self) -> dict[str, KernelState]:
        self._check_open()
        return fold(to_envelope(rec) for k in sorted(self._streams) for rec in self._streams[k])

    async def last_seq(self, kernel_id: str) -> int:
        self._check_open()
        head = self._heads.get(kernel_id)
        return head.last_seq if head is not None else 0

    async def undelivered(self, limit: int = 1000) -> list[Envelope]:
        self._check_open()
        out: list[Envelope] = []
        for rec in self._undelivered.values():
            if len(out) >= limit:
                break
            out.append(to_envelope(rec))
        return out

    async def count(self) -> int:
        self._check_open()
        return len(self._records)

    async def size_bytes(self) -> int:
        """Bytes of the encoded payloads."""
        self._check_open()
        return self._bytes

    async def undelivered_count(self) -> int:
        self._check_open()
        return len(self._undelivered)

    def _check_open(self) -> None:
        if not self._writer.running:
            raise StoreClosed("the event log is not open")

    async def _commit(self, reqs: list[Request]) -> list[BaseException | None]:
        staging, outcomes = stage_all(self._heads, reqs, self._ids.__contains__)
        for rec in staging.records:
            self._records.append(rec)
            self._streams.setdefault(rec.kernel_id, []).append(rec)
            self._undelivered[rec.event_id] = rec
            self._ids.add(rec.event_id)
            self._bytes += len(rec.payload)
        self._heads.update(staging.heads)
        for req in reqs:
            if isinstance(req, MarkDelivered):
                for event_id in req.event_ids:
                    self._undelivered.pop(event_id, None)
        return outcomes
