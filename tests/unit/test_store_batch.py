"""Group commit: batching, whole-batch failure, and nobody left waiting when the writer stops."""

from __future__ import annotations

import asyncio

import pytest

from kernlet.store.batch import GroupCommitter, MarkDelivered, Request
from kernlet.store.errors import StoreClosed, StoreError


def req(n: int) -> Request:
    return MarkDelivered((str(n),))


async def test_requests_waiting_together_commit_together() -> None:
    batches: list[int] = []

    async def commit(reqs: list[Request]) -> list[BaseException | None]:
        batches.append(len(reqs))
        await asyncio.sleep(0.01)
        return [None] * len(reqs)

    writer = GroupCommitter(commit, max_batch=5)
    writer.start()
    await asyncio.gather(*(writer.submit(req(n)) for n in range(12)))
    await writer.stop()
    assert batches == [5, 5, 2]
    assert writer.commits == 3


async def test_a_failed_transaction_fails_each_of_its_callers_and_the_next_one_runs() -> None:
    fail = True

    async def commit(reqs: list[Request]) -> list[BaseException | None]:
        if fail:
            raise StoreError("disk on fire")
        return [None] * len(reqs)

    writer = GroupCommitter(commit)
    writer.start()
    results = await asyncio.gather(
        *(writer.submit(req(n)) for n in range(3)), return_exceptions=True
    )
    assert [str(r) for r in results] == ["disk on fire"] * 3
    assert writer.commits == 0
    fail = False
    await writer.submit(req(9))
    assert writer.commits == 1
    await writer.stop()


async def test_per_request_outcomes_reach_their_callers() -> None:
    async def commit(reqs: list[Request]) -> list[BaseException | None]:
        return [ValueError("odd") if i % 2 else None for i in range(len(reqs))]

    writer = GroupCommitter(commit)
    writer.start()
    results = await asyncio.gather(
        *(writer.submit(req(n)) for n in range(4)), return_exceptions=True
    )
    assert [type(r).__name__ for r in results] == ["NoneType", "ValueError"] * 2
    await writer.stop()


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    release = asyncio.Event()

    async def commit(reqs: list[Request]) -> list[BaseException | None]:
        await release.wait()
        return [None] * len(reqs)

    writer = GroupCommitter(commit)
    writer.start()
    first = asyncio.ensure_future(writer.submit(req(1)))
    second = asyncio.ensure_future(writer.submit(req(2)))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    await second
    assert first.cancelled()
    await writer.stop()


async def test_when_the_writer_dies_every_waiting_caller_hears_at_once() -> None:
    async def commit(reqs: list[Request]) -> list[BaseException | None]:
        await asyncio.Event().wait()  # never commits
        return []

    writer = GroupCommitter(commit, max_batch=1)
    writer.start()
    waiting = [asyncio.ensure_future(writer.submit(req(n))) for n in range(3)]
    await asyncio.sleep(0.01)
    task = writer._task
    assert task is not None
    task.cancel()
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 1)
    assert all(isinstance(r, StoreClosed) for r in results)
    with pytest.raises(StoreClosed):
        await writer.submit(req(4))


async def test_submit_before_start_or_after_stop_is_refused() -> None:
    async def commit(reqs: list[Request]) -> list[BaseException | None]:
        return [None] * len(reqs)

    writer = GroupCommitter(commit)
    with pytest.raises(StoreClosed):
        await writer.submit(req(1))
    writer.start()
    await writer.stop()
    await writer.stop()
    with pytest.raises(StoreClosed):
        await writer.submit(req(1))


async def test_lazy_requests_wait_for_company_and_an_eager_one_takes_them_along() -> None:
    batches: list[list[str]] = []

    async def commit(reqs: list[Request]) -> list[BaseException | None]:
        batches.append([r.event_ids[0] for r in reqs if isinstance(r, MarkDelivered)])
        return [None] * len(reqs)

    writer = GroupCommitter(commit, lazy_delay=60.0)  # only an eager request ends the wait
    writer.start()
    lazy = [asyncio.ensure_future(writer.submit(req(n), lazy=True)) for n in range(3)]
    for _ in range(5):  # the lazy ones arrive one by one, each on a later turn of the loop
        await asyncio.sleep(0)
    assert batches == []
    assert not any(f.done() for f in lazy)
    await writer.submit(req(9))
    await asyncio.gather(*lazy)
    assert batches == [["0", "1", "2", "9"]]
    await writer.stop()


async def test_a_lazy_request_alone_commits_when_its_delay_is_up() -> None:
    batches: list[int] = []

    async def commit(reqs: list[Request]) -> list[BaseException | None]:
        batches.append(len(reqs))
        return [None] * len(reqs)

    writer = GroupCommitter(commit, lazy_delay=0.01)
    writer.start()
    await asyncio.wait_for(writer.submit(req(1), lazy=True), 30)
    await writer.submit(req(2))  # eager, alone: at once
    assert batches == [1, 1]
    await writer.stop()


async def test_stop_commits_the_lazy_requests_still_waiting() -> None:
    batches: list[int] = []

    async def commit(reqs: list[Request]) -> list[BaseException | None]:
        batches.append(len(reqs))
        return [None] * len(reqs)

    writer = GroupCommitter(commit, lazy_delay=60.0)
    writer.start()
    lazy = asyncio.ensure_future(writer.submit(req(1), lazy=True))
    await asyncio.sleep(0)
    await writer.stop()
    await lazy
    assert batches == [1]
