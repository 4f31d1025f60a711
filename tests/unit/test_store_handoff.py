"""The SQLite log's writer thread (ThreadCommitter): one group per loop iteration, each
committed on the writer's own thread, and nobody left waiting or losing an acknowledged
append when it stops or breaks."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fixtures.bodies import body
from kernlet.events.types import new_envelope
from kernlet.store import SQLiteEventLog
from kernlet.store.batch import MarkDelivered, Request
from kernlet.store.errors import StoreClosed, StoreError
from kernlet.store.thread_commit import SyncCommitFn, ThreadCommitter


def req(n: int) -> Request:
    return MarkDelivered((str(n),))


async def test_the_callers_of_one_iteration_commit_as_one_group_on_the_writer_thread() -> None:
    groups: list[tuple[int, str]] = []

    def commit(reqs: list[Request]) -> list[BaseException | None]:
        groups.append((len(reqs), threading.current_thread().name))
        return [None] * len(reqs)

    with ThreadPoolExecutor(1, thread_name_prefix="test-writer") as pool:
        writer = ThreadCommitter(commit, max_batch=5)
        writer.start(pool)
        await asyncio.gather(*(writer.submit(req(n)) for n in range(4)))
        await asyncio.gather(*(writer.submit(req(n)) for n in range(12)))
        await writer.stop()
    assert [n for n, _ in groups] == [4, 5, 5, 2]
    assert all(name.startswith("test-writer") for _, name in groups)
    assert writer.commits == 4


async def test_a_failed_transaction_fails_its_group_and_the_next_one_commits() -> None:
    fail = [True]

    def commit(reqs: list[Request]) -> list[BaseException | None]:
        if fail.pop(0) if fail else False:
            raise StoreError("disk on fire")
        return [None if i % 2 == 0 else StoreError(f"no {i}") for i in range(len(reqs))]

    with ThreadPoolExecutor(1) as pool:
        writer = ThreadCommitter(commit)
        writer.start(pool)
        first = await asyncio.gather(*(writer.submit(req(n)) for n in range(3)),
                                     return_exceptions=True)
        second = await asyncio.gather(*(writer.submit(req(n)) for n in range(3)),
                                      return_exceptions=True)
        await writer.stop()
    assert all(isinstance(r, StoreError) and "fire" in str(r) for r in first)
    assert second[0] is None and second[2] is None and isinstance(second[1], StoreError)
    assert writer.commits == 1


async def test_when_the_writer_thread_breaks_every_waiting_caller_hears_at_once() -> None:
    def commit(reqs: list[Request]) -> list[BaseException | None]:
        raise SystemExit("the thread dies")  # not an Exception: the job ends

    with ThreadPoolExecutor(1) as pool:
        writer = ThreadCommitter(commit)
        writer.start(pool)
        waiting = [asyncio.ensure_future(writer.submit(req(n))) for n in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
        assert all(isinstance(r, StoreClosed) for r in results)
        with pytest.raises(StoreClosed):
            await writer.submit(req(4))
        with pytest.raises(SystemExit):
            await writer.stop()


async def test_closing_mid_group_loses_no_acknowledged_append(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = SQLiteEventLog(path)
    await log.open()
    kids = [f"k{i}" for i in range(8)]
    appends = [asyncio.ensure_future(log.append([new_envelope(k, 1, body("kernel_preparing"))]))
               for k in kids]
    await asyncio.sleep(0)  # the appends are queued, their group not yet handed over
    await log.close()
    results = await asyncio.gather(*appends, return_exceptions=True)
    assert results == [None] * 8  # queued before close: all committed, none refused
    log = SQLiteEventLog(path)
    await log.open()
    try:
        assert set(await log.live_kernels()) == set(kids)
        assert await log.count() == 8
    finally:
        await log.close()


def _recording() -> tuple[list[list[str]], SyncCommitFn]:
    groups: list[list[str]] = []

    def commit(reqs: list[Request]) -> list[BaseException | None]:
        groups.append([r.event_ids[0] for r in reqs if isinstance(r, MarkDelivered)])
        return [None] * len(reqs)

    return groups, commit


async def test_lazy_requests_wait_for_company_and_an_eager_one_takes_them_along() -> None:
    groups, commit = _recording()
    with ThreadPoolExecutor(1) as pool:
        writer = ThreadCommitter(commit, lazy_delay=60.0)  # only an eager request ends the wait
        writer.start(pool)
        lazy = [asyncio.ensure_future(writer.submit(req(n), lazy=True)) for n in range(3)]
        for _ in range(5):  # each lazy one queued on a turn of the loop of its own
            await asyncio.sleep(0.01)
        assert groups == []
        assert not any(f.done() for f in lazy)
        await writer.submit(req(9))
        await asyncio.gather(*lazy)
        await writer.stop()
    assert groups == [["0", "1", "2", "9"]]


async def test_a_lazy_request_alone_commits_when_its_delay_is_up() -> None:
    groups, commit = _recording()
    with ThreadPoolExecutor(1) as pool:
        writer = ThreadCommitter(commit, lazy_delay=0.01)
        writer.start(pool)
        await asyncio.wait_for(writer.submit(req(1), lazy=True), 30)
        await writer.submit(req(2))  # eager, alone: at once
        await writer.stop()
    assert groups == [["1"], ["2"]]


async def test_stop_commits_the_lazy_requests_still_waiting() -> None:
    groups, commit = _recording()
    with ThreadPoolExecutor(1) as pool:
        writer = ThreadCommitter(commit, lazy_delay=60.0)
        writer.start(pool)
        lazy = asyncio.ensure_future(writer.submit(req(1), lazy=True))
        await asyncio.sleep(0.01)
        await writer.stop()
        await asyncio.wait_for(lazy, 5)
    assert groups == [["1"]]


async def test_a_read_of_a_stream_sees_what_was_appended_lazily_before_it(tmp_path: Path) -> None:
    log = SQLiteEventLog(tmp_path / "events.db")
    await log.open()
    try:
        await log.append([new_envelope("k1", 1, body("kernel_preparing"))])
        lazy = asyncio.ensure_future(
            log.append([new_envelope("k2", 1, body("kernel_preparing"))], lazy=True))
        await asyncio.sleep(0)  # queued, waiting for company (LAZY_DELAY is 50 ms)
        assert not lazy.done()
        assert [e.seq for e in await log.read_stream("k2")] == [1]
        assert lazy.done()
    finally:
        await log.close()
