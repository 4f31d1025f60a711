"""Group commit, shared by both logs: one writer task, one transaction per batch of requests.

Callers submit requests (an append, or a mark-delivered) and await them. A single writer task
takes every request waiting in the queue (up to ``max_batch``) and hands the batch to the log's
``commit`` function, which writes it in one transaction (one fsync for SQLite) and says, per
request, whether it held. A request that fails validation fails alone; the others commit.
Requests arriving while a batch is being committed form the next batch, so the batch size
follows the load without any added delay. A *lazy* request (an append nothing waits on
before acting: execution events, see docs/decisions.md) may wait up to ``lazy_delay`` for
company: its batch is committed when that time is up, when it is full, or at once when any
other request arrives (the queue is one FIFO, so order within and across streams holds).

:class:`Staging` is the validation both logs share: each append must continue its streams
(seq = last + 1), carry new event ids, and be allowed by the lifecycle table; it is checked
against the committed heads plus the appends staged before it in the same batch.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kernlet.events.lifecycle import IllegalTransition, KernelState, apply
from kernlet.events.types import AGENT_STREAM, Envelope
from kernlet.store.errors import AppendConflict, DuplicateEvent, SequenceConflict, StoreClosed
from kernlet.store.records import Record, to_record

if TYPE_CHECKING:
    from kernlet.store.thread_commit import ThreadCommitter

__all__ = [
    "LAZY_DELAY",
    "Append",
    "GroupCommitter",
    "LazyCounting",
    "MarkDelivered",
    "Request",
    "Staging",
    "StreamHead",
    "WriteFront",
    "stage_all",
]


@dataclass(frozen=True, slots=True)
class StreamHead:
    """The end of one stream: its last seq and, for a kernel, its folded state."""

    last_seq: int = 0
    #: the kernel's state after its last event (None for ``_agent`` and unknown streams)
    state: KernelState | None = None
    #: time of the stream's last event
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Append:
    """One caller's append: the envelopes and their encoded records, in the same order."""

    envs: Sequence[Envelope]
    records: Sequence[Record]


@dataclass(frozen=True, slots=True)
class MarkDelivered:
    """One caller's outbox acknowledgement."""

    event_ids: tuple[str, ...]


Request = Append | MarkDelivered
#: how long a lazy request may wait for others to share its transaction (seconds)
LAZY_DELAY = 0.05


@dataclass(frozen=True, slots=True)
class _Item:
    """A queued request, the future its caller awaits, and whether it may wait for company."""

    req: Request
    done: asyncio.Future[None]
    lazy: bool
#: writes a batch in one transaction; returns one outcome per request (None: it holds).
#: Raising means nothing of the batch was written.
CommitFn = Callable[[list[Request]], Awaitable[list[BaseException | None]]]


@dataclass(slots=True)
class Staging:
    """The appends of one transaction, validated one by one against the committed heads."""

    committed: Mapping[str, StreamHead]
    #: whether an event id is in the committed log already (SQLite leaves that to the index)
    known: Callable[[str], bool] = lambda _event_id: False
    #: new heads of the streams that the staged appends touch
    heads: dict[str, StreamHead] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)

    def check(self, req: Append) -> dict[str, StreamHead]:
        """The new heads of the streams ``req`` continues, if it may follow what is staged.

        Pure. Raises SequenceConflict, DuplicateEvent, IllegalTransition.
        """
        new: dict[str, StreamHead] = {}
        for env in req.envs:
            k = env.kernel_id
            head = new.get(k) or self.heads.get(k) or self.committed.get(k)
            last = head.last_seq if head is not None else 0
            if env.seq != last + 1:
                raise SequenceConflict(k, env.seq, last + 1)
            state = head.state if head is not None else None
            if k != AGENT_STREAM:
                state = apply(state, env)
            new[k] = StreamHead(env.seq, state, env.time)
        ids = [rec.event_id for rec in req.records]
        for i, event_id in enumerate(ids):
            if event_id in self.ids or event_id in ids[:i] or self.known(event_id):
                raise DuplicateEvent(event_id)
        return new

    def add(self, req: Append, heads: dict[str, StreamHead]) -> None:
        """Stage a checked append, with the heads that :meth:`check` returned for it."""
        self.heads.update(heads)
        self.records.extend(req.records)
        self.ids.update(rec.event_id for rec in req.records)


def stage_all(
    committed: Mapping[str, StreamHead],
    reqs: Sequence[Request],
    known: Callable[[str], bool] = lambda _event_id: False,
) -> tuple[Staging, list[BaseException | None]]:
    """Stage every append of a batch that holds; one outcome per request (None: it holds)."""
    staging = Staging(committed, known)
    outcomes: list[BaseException | None] = []
    for req in reqs:
        outcome: BaseException | None = None
        if isinstance(req, Append):
            try:
                staging.add(req, staging.check(req))
            except (AppendConflict, IllegalTransition) as exc:
                outcome = exc
        outcomes.append(outcome)
    return staging, outcomes


class LazyCounting(abc.ABC):
    """What both committers share: how many lazy requests wait unanswered, and
    :meth:`settle` for readers that must see them."""

    _accepting: bool = False
    #: lazy requests submitted and not yet answered
    _lazy: int = 0

    @abc.abstractmethod
    async def submit(self, req: Request, *, lazy: bool = False) -> None: ...

    async def _answered(self, done: asyncio.Future[None], lazy: bool) -> None:
        """Await a submitted request's outcome, counting it while it is lazy."""
        if not lazy:
            await done
            return
        self._lazy += 1
        try:
            await done
        finally:
            self._lazy -= 1

    async def settle(self) -> None:
        """Wait until the lazy requests submitted before this call are committed (a reader
        calls it so that it sees them): an empty eager request through the same FIFO."""
        if self._lazy and self._accepting:
            await self.submit(MarkDelivered(()))


class GroupCommitter(LazyCounting):
    """The single writer task of a log. Start and stop it on the loop that uses the log."""

    def __init__(self, commit: CommitFn, max_batch: int = 1024,
                 lazy_delay: float = LAZY_DELAY) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._lazy_delay = lazy_delay
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        #: transactions committed so far
        self.commits = 0

    @property
    def running(self) -> bool:
        return self._accepting

    def start(self) -> None:
        """Start the writer task on the running loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kernlet-log-writer")
        self._accepting = True

    async def submit(self, req: Request, *, lazy: bool = False) -> None:
        """Queue one request and wait until its batch committed (or it failed); a lazy one
        may wait up to ``lazy_delay`` for others to share its transaction."""
        if not self._accepting:
            raise StoreClosed("the event log is not open")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(req, done, lazy))
        await self._answered(done, lazy)

    async def stop(self) -> None:
        """Refuse new requests, commit the queued ones, and end the writer task."""
        if self._task is None:
            return
        self._accepting = False
        self._queue.put_nowait(None)
        task, self._task = self._task, None
        await task

    async def _run(self) -> None:
        batch: list[_Item] = []
        try:
            stopping = False
            while not stopping:
                stopping = await self._gather(batch, await self._queue.get())
                if batch:
                    await self._run_batch(batch)
                    batch = []
        finally:
            # cancelled or broken: nobody waits forever
            self._accepting = False
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    batch.append(item)
            for it in batch:
                if not it.done.done():
                    it.done.set_exception(StoreClosed("the event log writer stopped"))

    async def _gather(self, batch: list[_Item], item: _Item | None) -> bool:
        """Fill ``batch`` from ``item`` on: what is queued, and while every request in it is
        lazy, what arrives before the first one's delay is up. True when told to stop."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        eager = False
        while item is not None:
            batch.append(item)
            eager = eager or not item.lazy
            if len(batch) >= self._max_batch:
                return False
            if not self._queue.empty():
                item = self._queue.get_nowait()
                continue
            if eager:
                return False
            if deadline is None:
                deadline = loop.time() + self._lazy_delay
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                item = await asyncio.wait_for(self._queue.get(), left)
            except TimeoutError:
                return False
        return True

    async def _run_batch(self, batch: list[_Item]) -> None:
        outcomes: list[BaseException | None]
        try:
            outcomes = await self._commit([it.req for it in batch])
        except Exception as exc:  # noqa: BLE001 - the transaction failed: each caller hears why
            outcomes = [exc] * len(batch)
        else:
            self.commits += 1
        for it, outcome in zip(batch, outcomes, strict=True):
            done = it.done
            if done.done():  # the caller was cancelled
                continue
            if outcome is None:
                done.set_result(None)
            else:
                done.set_exception(outcome)


class WriteFront:
    """What both logs do the same way in front of their group committer: hand appends and
    mark-delivered requests to it and await them. A subclass sets ``_writer`` and says,
    in ``_check_open``, when it is open."""

    _writer: GroupCommitter | ThreadCommitter

    def _check_open(self) -> None:
        raise NotImplementedError

    @property
    def commits(self) -> int:
        return self._writer.commits

    async def append(self, envs: Sequence[Envelope], *, lazy: bool = False) -> None:
        self._check_open()
        if envs:
            await self._writer.submit(Append(tuple(envs), [to_record(env) for env in envs]),
                                      lazy=lazy)

    async def mark_delivered(self, event_ids: Iterable[str]) -> None:
        self._check_open()
        ids = tuple(event_ids)
        if ids:
            await self._writer.submit(MarkDelivered(ids))
