"""Group commit, shared by both logs: one writer task, one transaction per batch of requests.

Callers submit requests (an append, or a mark-delivered) and await them. A single writer task
takes every request waiting in the queue (up to ``max_batch``) and hands the batch to the log's
``commit`` function, which writes it in one transaction (one fsync for SQLite) and says, per
request, whether it held. A request that fails validation fails alone; the others commit.
Requests arriving while a batch is being committed form the next batch, so the batch size
follows the load without any added delay.

:class:`Staging` is the validation both logs share: each append must continue its streams
(seq = last + 1), carry new event ids, and be allowed by the lifecycle table; it is checked
against the committed heads plus the appends staged before it in the same batch.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from kernlet.events.lifecycle import IllegalTransition, KernelState, apply
from kernlet.events.types import AGENT_STREAM, Envelope
from kernlet.store.errors import AppendConflict, DuplicateEvent, SequenceConflict, StoreClosed
from kernlet.store.records import Record, to_record

__all__ = [
    "Append",
    "GroupCommitter",
    "MarkDelivered",
    "Request",
    "Staging",
    "StreamHead",
    "ThreadCommitter",
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


class GroupCommitter:
    """The single writer task of a log. Start and stop it on the loop that uses the log."""

    def __init__(self, commit: CommitFn, max_batch: int = 1024) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Request, asyncio.Future[None]] | None] = asyncio.Queue()
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

    async def submit(self, req: Request) -> None:
        """Queue one request and wait until its batch committed (or it failed)."""
        if not self._accepting:
            raise StoreClosed("the event log is not open")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((req, done))
        await done

    async def stop(self) -> None:
        """Refuse new requests, commit the queued ones, and end the writer task."""
        if self._task is None:
            return
        self._accepting = False
        self._queue.put_nowait(None)
        task, self._task = self._task, None
        await task

    async def _run(self) -> None:
        batch: list[tuple[Request, asyncio.Future[None]]] = []
        try:
            stopping = False
            while not stopping:
                item = await self._queue.get()
                while item is not None:
                    batch.append(item)
                    if len(batch) >= self._max_batch or self._queue.empty():
                        break
                    item = self._queue.get_nowait()
                stopping = item is None
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
            for _, done in batch:
                if not done.done():
                    done.set_exception(StoreClosed("the event log writer stopped"))

    async def _run_batch(self, batch: list[tuple[Request, asyncio.Future[None]]]) -> None:
        outcomes: list[BaseException | None]
        try:
            outcomes = await self._commit([req for req, _ in batch])
        except Exception as exc:  # noqa: BLE001 - the transaction failed: each caller hears why
            outcomes = [exc] * len(batch)
        else:
            self.commits += 1
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if done.done():  # the caller was cancelled
                continue
            if outcome is None:
                done.set_result(None)
            else:
                done.set_exception(outcome)


#: the same as CommitFn, run on the writer's own thread
SyncCommitFn = Callable[[list[Request]], list[BaseException | None]]
_Waiting = tuple[Request, "asyncio.Future[None]"]


class ThreadCommitter:
    """Group commit on a thread of its own, with one wake each way per group.

    The callers of one loop iteration queue their requests; the first schedules a flush
    (``call_soon``: it runs after them) that hands the whole group to the writer's thread in
    one put. That thread blocks on its inbox, commits each group (joining those that queued
    up during its last commit, up to ``max_batch`` requests), and gives the outcomes back in
    one ``call_soon_threadsafe``, which resolves the group's futures. Against
    :class:`GroupCommitter` and an executor this spares the writer task and its two extra
    loop iterations per transaction. ``commit`` runs only on that thread (it is started, as a
    job that lasts until :meth:`stop`, on the single-thread executor the log opened its
    connection on).
    """

    def __init__(self, commit: SyncCommitFn, max_batch: int = 1024) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: queue.SimpleQueue[list[_Waiting] | None] = queue.SimpleQueue()
        self._pending: list[_Waiting] = []
        #: the requests the writer's thread took from the inbox last (its thread only)
        self._taken: list[_Waiting] = []
        self._job: asyncio.Future[None] | None = None
        self._accepting = False
        #: transactions committed so far (written on the writer's thread only)
        self.commits = 0

    @property
    def running(self) -> bool:
        return self._accepting

    def start(self, executor: Executor) -> None:
        """Start the writer's job on ``executor`` (one thread), answering on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._inbox = queue.SimpleQueue()
        self._pending = []
        self._job = asyncio.wrap_future(executor.submit(self._serve))
        self._job.add_done_callback(self._ended)
        self._accepting = True

    async def submit(self, req: Request) -> None:
        """Queue one request and wait until its group committed (or it failed)."""
        if not self._accepting or self._loop is None:
            raise StoreClosed("the event log is not open")
        done: asyncio.Future[None] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append((req, done))
        await done

    async def stop(self) -> None:
        """Refuse new requests, commit the queued ones, and end the writer's job."""
        if self._job is None:
            return
        self._accepting = False
        self._flush()
        self._inbox.put(None)
        job, self._job = self._job, None
        await job  # the job's last outcomes were scheduled before its end: they come first

    def _flush(self) -> None:
        if self._pending:
            group, self._pending = self._pending, []
            self._inbox.put(group)

    def _ended(self, _job: asyncio.Future[None]) -> None:
        """The job ended (stopped, or broken): nobody waits forever."""
        self._accepting = False
        waiting, self._pending = self._pending, []
        _resolve(waiting, [StoreClosed("the event log writer stopped")] * len(waiting))

    def _serve(self) -> None:
        """The writer's thread: commit groups until the inbox's end mark."""
        loop = self._loop
        assert loop is not None
        try:
            self._serve_on(loop)
        except BaseException:
            self._accepting = False
            waiting = self._taken  # those already answered are skipped by _resolve
            while not self._inbox.empty():
                waiting.extend(self._inbox.get_nowait() or ())
            closed: list[BaseException | None] = [StoreClosed("the event log writer stopped")]
            loop.call_soon_threadsafe(_resolve, waiting, closed * len(waiting))
            raise

    def _serve_on(self, loop: asyncio.AbstractEventLoop) -> None:
        stopping = False
        while not stopping:
            item = self._inbox.get()
            waiting: list[_Waiting] = []
            while item is not None:
                waiting.extend(item)
                if len(waiting) >= self._max_batch or self._inbox.empty():
                    break
                item = self._inbox.get_nowait()
            stopping = item is None
            self._taken = waiting
            for start in range(0, len(waiting), self._max_batch):
                group = waiting[start : start + self._max_batch]
                outcomes: list[BaseException | None]
                try:
                    outcomes = self._commit([req for req, _ in group])
                except Exception as exc:  # noqa: BLE001 - the transaction failed: each caller hears why
                    outcomes = [exc] * len(group)
                else:
                    self.commits += 1
                loop.call_soon_threadsafe(_resolve, group, outcomes)


def _resolve(group: list[_Waiting], outcomes: list[BaseException | None]) -> None:
    for (_, done), outcome in zip(group, outcomes, strict=True):
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

    async def append(self, envs: Sequence[Envelope]) -> None:
        self._check_open()
        if envs:
            await self._writer.submit(Append(tuple(envs), [to_record(env) for env in envs]))

    async def mark_delivered(self, event_ids: Iterable[str]) -> None:
        self._check_open()
        ids = tuple(event_ids)
        if ids:
            await self._writer.submit(MarkDelivered(ids))
