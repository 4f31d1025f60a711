"""Group commit on the writer's own thread (the SQLite log's): one hand-off each way per group.

The callers of one loop iteration queue their requests; the first schedules a flush
(``call_soon``: it runs after them) that hands the whole group to the writer's thread in one
put. That thread blocks on its inbox, commits each group (joining those that queued up during
its last commit, up to ``max_batch`` requests), and gives the outcomes back in one
``call_soon_threadsafe``, which resolves the group's futures. Against
:class:`~kernlet.store.batch.GroupCommitter` and an executor this spares the writer task and
its two extra loop iterations per transaction. ``commit`` runs only on that thread (it is
started, as a job that lasts until :meth:`ThreadCommitter.stop`, on the single-thread executor
the log opened its connection on).

A *lazy* request (``submit(req, lazy=True)``: execution events, docs/decisions.md 2) does not
schedule a flush of its own at once: it waits up to ``lazy_delay`` for company. Any eager
request flushes the lazy ones queued before it in the same group (one FIFO: the order of every
stream holds).
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable
from concurrent.futures import Executor

from kernlet.store.batch import LAZY_DELAY, LazyCounting, Request
from kernlet.store.errors import StoreClosed

__all__ = ["SyncCommitFn", "ThreadCommitter"]

#: writes a batch in one transaction on the writer's thread; one outcome per request (None: it
#: holds). Raising means nothing of the batch was written.
SyncCommitFn = Callable[[list[Request]], list[BaseException | None]]
_Waiting = tuple[Request, "asyncio.Future[None]"]


class ThreadCommitter(LazyCounting):
    """Group commit on a thread of its own, with one wake each way per group."""

    def __init__(self, commit: SyncCommitFn, max_batch: int = 1024,
                 lazy_delay: float = LAZY_DELAY) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._lazy_delay = lazy_delay
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: queue.SimpleQueue[list[_Waiting] | None] = queue.SimpleQueue()
        self._pending: list[_Waiting] = []
        #: a flush is scheduled for this loop iteration (an eager request is pending)
        self._soon = False
        #: the delayed flush of pending lazy requests
        self._timer: asyncio.TimerHandle | None = None
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
        self._soon = False
        self._timer = None
        self._job = asyncio.wrap_future(executor.submit(self._serve))
        self._job.add_done_callback(self._ended)
        self._accepting = True

    async def submit(self, req: Request, *, lazy: bool = False) -> None:
        """Queue one request and wait until its group committed (or it failed); a lazy one
        may wait up to ``lazy_delay`` for others to share its transaction."""
        if not self._accepting or self._loop is None:
            raise StoreClosed("the event log is not open")
        done: asyncio.Future[None] = self._loop.create_future()
        self._pending.append((req, done))
        self._schedule(self._loop, lazy)
        await self._answered(done, lazy)

    def _schedule(self, loop: asyncio.AbstractEventLoop, lazy: bool) -> None:
        if self._soon:
            return
        if lazy:
            if self._timer is None:
                self._timer = loop.call_later(self._lazy_delay, self._flush)
            return
        self._soon = True
        loop.call_soon(self._flush)

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
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            group, self._pending = self._pending, []
            self._inbox.put(group)

    def _ended(self, _job: asyncio.Future[None]) -> None:
        """The job ended (stopped, or broken): nobody waits forever."""
        self._accepting = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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


