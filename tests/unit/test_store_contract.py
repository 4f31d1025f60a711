"""One contract suite for every EventLog implementation (memory, and SQLite in tmp_path)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fixtures.bodies import body
from kernlet.events.lifecycle import IllegalTransition, KernelState, State, replay
from kernlet.events.types import (
    AGENT_STREAM,
    AgentStarted,
    Envelope,
    ExecutionStarted,
    KernelPreparing,
    new_envelope,
)
from kernlet.store import (
    DuplicateEvent,
    EventLog,
    MemoryEventLog,
    SequenceConflict,
    SQLiteEventLog,
    StoreClosed,
    fold,
)

RUNNING_PATH = ("kernel_preparing", "kernel_creating", "container_created", "kernel_started")


def envs(kernel_id: str, types: tuple[str, ...], start: int = 1) -> list[Envelope]:
    return [
        new_envelope(kernel_id, start + i, body(t), now=1000.0 + start + i)
        for i, t in enumerate(types)
    ]


Reopen = Callable[[EventLog], Awaitable[EventLog]]


@pytest.fixture(params=["memory", "sqlite"])
async def kit(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[EventLog, Reopen]]:
    """An open log, and a function that closes it and opens the same storage anew."""
    opened: list[EventLog] = []

    def make() -> EventLog:
        if request.param == "memory":
            return opened[0] if opened else MemoryEventLog()
        return SQLiteEventLog(tmp_path / "events.db")

    async def reopen(log: EventLog) -> EventLog:
        await log.close()
        again = make()
        await again.open()
        opened.append(again)
        return again

    log = make()
    await log.open()
    opened.append(log)
    yield log, reopen
    for each in opened:
        await each.close()


@pytest.fixture
def log(kit: tuple[EventLog, Reopen]) -> EventLog:
    return kit[0]


async def test_is_an_event_log(log: EventLog) -> None:
    assert isinstance(log, EventLog)


async def test_append_then_read_in_order(log: EventLog) -> None:
    a = envs("k-a", RUNNING_PATH[:2])
    b = envs("k-b", RUNNING_PATH)
    await log.append(a)
    await log.append(b)
    more = envs("k-a", RUNNING_PATH[2:], start=3)
    await log.append(more)
    assert await log.read_stream("k-a") == a + more
    assert await log.read_stream("k-b") == b
    assert await log.read_stream("k-a", after_seq=2) == more
    assert await log.read_stream("nobody") == []
    assert await log.last_seq("k-a") == 4
    assert await log.last_seq("nobody") == 0
    assert await log.kernel_ids() == ["k-a", "k-b"]
    assert await log.count() == 8


async def test_agent_stream_is_a_stream_but_not_a_kernel(log: EventLog) -> None:
    started = new_envelope(AGENT_STREAM, 1, AgentStarted(reason="self-started"))
    await log.append([started])
    await log.append(envs("k", RUNNING_PATH[:1]))
    assert await log.read_stream(AGENT_STREAM) == [started]
    assert await log.last_seq(AGENT_STREAM) == 1
    assert await log.kernel_ids() == ["k"]
    assert set(await log.live_kernels()) == {"k"}


async def test_empty_append_is_a_no_op(log: EventLog) -> None:
    await log.append([])
    assert await log.count() == 0


async def _unchanged_after(log: EventLog, attempt: Awaitable[None], error: type[Exception]) -> None:
    before = (await log.count(), await log.read_stream("k"), await log.undelivered_count())
    with pytest.raises(error):
        await attempt
    assert (await log.count(), await log.read_stream("k"), await log.undelivered_count()) == before


async def test_taken_seq_raises_and_writes_nothing(log: EventLog) -> None:
    await log.append(envs("k", RUNNING_PATH[:2]))
    # the first envelope would be fine; the second takes seq 2 again
    batch = envs("k", ("container_created",), start=3) + envs("k", ("kernel_started",), start=2)
    await _unchanged_after(log, log.append(batch), SequenceConflict)
    await _unchanged_after(log, log.append(envs("k", ("container_created",), 2)), SequenceConflict)
    assert await log.last_seq("k") == 2


async def test_seq_gap_raises(log: EventLog) -> None:
    await log.append(envs("k", RUNNING_PATH[:1]))
    with pytest.raises(SequenceConflict) as caught:
        await log.append(envs("k", ("kernel_creating",), start=3))
    assert (caught.value.seq, caught.value.expected) == (3, 2)


async def test_illegal_transition_raises_and_writes_nothing(log: EventLog) -> None:
    await log.append(envs("k", RUNNING_PATH[:1]))
    await _unchanged_after(log, log.append(envs("k", ("kernel_started",), 2)), IllegalTransition)
    await _unchanged_after(log, log.append(envs("new", ("kernel_started",))), IllegalTransition)


async def test_duplicate_event_id_raises_and_writes_nothing(log: EventLog) -> None:
    [first] = envs("k", RUNNING_PATH[:1])
    await log.append([first])
    again = dataclasses.replace(envs("k", ("kernel_creating",), 2)[0], event_id=first.event_id)
    await _unchanged_after(log, log.append([again]), DuplicateEvent)
    twice = envs("k", ("kernel_creating", "container_created"), 2)
    twice[1] = dataclasses.replace(twice[1], event_id=twice[0].event_id)
    await _unchanged_after(log, log.append(twice), DuplicateEvent)


async def test_a_failing_caller_does_not_fail_its_batch(log: EventLog) -> None:
    await log.append(envs("dup", RUNNING_PATH[:1]))
    taken = (await log.read_stream("dup"))[0].event_id
    before = log.commits
    results = await asyncio.gather(
        log.append(envs("ok-1", RUNNING_PATH)),
        log.append(envs("k", RUNNING_PATH[:1], start=2)),  # gap
        log.append([dataclasses.replace(envs("dup", ("kernel_creating",), 2)[0], event_id=taken)]),
        log.append(envs("ok-2", RUNNING_PATH)),
        log.append(envs("ok-1", ("kernel_restarting",), start=5)),  # follows ok-1 in the batch
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == [
        "NoneType",
        "SequenceConflict",
        "DuplicateEvent",
        "NoneType",
        "NoneType",
    ]
    assert log.commits == before + 1
    assert await log.last_seq("ok-1") == 5
    assert await log.last_seq("ok-2") == 4
    assert await log.last_seq("dup") == 1
    assert await log.kernel_ids() == ["dup", "ok-1", "ok-2"]


async def test_live_kernels_excludes_terminated(log: EventLog) -> None:
    await log.append(envs("run", RUNNING_PATH))
    await log.append(envs("gone", (*RUNNING_PATH, "kernel_terminating", "kernel_terminated")))
    await log.append(envs("new", RUNNING_PATH[:1]))
    live = await log.live_kernels()
    assert set(live) == {"run", "new"}
    assert live["run"].state is State.RUNNING
    assert live["run"] == replay(await log.read_stream("run"))
    assert await log.kernel_ids() == ["gone", "new", "run"]


async def test_all_kernels_is_the_full_fold(log: EventLog) -> None:
    await log.append(envs("run", RUNNING_PATH))
    await log.append(envs("gone", (*RUNNING_PATH, "kernel_terminating", "kernel_terminated")))
    await log.append([new_envelope(AGENT_STREAM, 1, AgentStarted(reason="self-started"))])
    everything = await log.all_kernels()
    assert set(everything) == {"run", "gone"}  # terminated too, never the agent's stream
    for kid in ("run", "gone"):
        assert everything[kid] == replay(await log.read_stream(kid))
    assert everything["gone"].state is State.TERMINATED


async def test_outbox(log: EventLog) -> None:
    await log.append(envs("k1", RUNNING_PATH[:2]))
    await log.append([new_envelope(AGENT_STREAM, 1, AgentStarted(reason="r"))])
    await log.append(envs("k2", RUNNING_PATH[:1]))
    await log.append(envs("k1", RUNNING_PATH[2:3], start=3))
    pending = await log.undelivered()
    assert [(e.kernel_id, e.seq) for e in pending] == [
        ("k1", 1),
        ("k1", 2),
        (AGENT_STREAM, 1),
        ("k2", 1),
        ("k1", 3),
    ]
    assert await log.undelivered_count() == 5
    assert await log.undelivered(limit=2) == pending[:2]
    await log.mark_delivered([pending[0].event_id, pending[3].event_id, "no-such-id"])
    await log.mark_delivered([])
    assert await log.undelivered() == [pending[1], pending[2], pending[4]]
    assert await log.undelivered_count() == 3
    assert await log.count() == 5


async def test_persists_across_close_and_open(kit: tuple[EventLog, Reopen]) -> None:
    log, reopen = kit
    await log.append(envs("run", RUNNING_PATH))
    await log.append(envs("gone", (*RUNNING_PATH[:1], "kernel_terminated")))
    await log.append([new_envelope(AGENT_STREAM, 1, AgentStarted(reason="r"))])
    first = (await log.undelivered())[0]
    await log.mark_delivered([first.event_id])
    before = (
        await log.read_stream("run"),
        await log.live_kernels(),
        await log.undelivered(),
        await log.kernel_ids(),
        await log.count(),
    )
    log = await reopen(log)
    after = (
        await log.read_stream("run"),
        await log.live_kernels(),
        await log.undelivered(),
        await log.kernel_ids(),
        await log.count(),
    )
    assert after == before
    # the streams go on where they stopped, and the lifecycle still holds after a restart
    await log.append(envs("run", ("execution_started",), start=5))
    await log.append([new_envelope(AGENT_STREAM, 2, AgentStarted(reason="restarted"))])
    with pytest.raises(IllegalTransition):
        await log.append(envs("gone", ("kernel_preparing",), start=3))
    with pytest.raises(SequenceConflict):
        await log.append(envs("run", ("execution_finished",), start=5))
    assert (await log.live_kernels())["run"].executions == 1


async def test_concurrent_appends_are_durable_and_grouped(kit: tuple[EventLog, Reopen]) -> None:
    log, reopen = kit
    per_writer = ("kernel_preparing", "kernel_creating", "container_created", "kernel_started")
    runs = 6

    async def writer(n: int) -> None:
        kernel = f"k{n}"
        await log.append(envs(kernel, per_writer))
        for i in range(runs):
            await log.append([new_envelope(kernel, 5 + i, ExecutionStarted(f"r{i}", "query"))])

    before = log.commits
    await asyncio.gather(*(writer(n) for n in range(8)))
    appends = 8 * (1 + runs)
    assert log.commits - before < appends
    log = await reopen(log)
    assert await log.count() == 8 * (len(per_writer) + runs)
    live = await log.live_kernels()
    assert {k: s.executions for k, s in live.items()} == {f"k{n}": runs for n in range(8)}


async def test_closed_log_refuses_and_close_is_idempotent(log: EventLog) -> None:
    pending = asyncio.ensure_future(log.append(envs("k", RUNNING_PATH[:1])))
    await asyncio.sleep(0)
    await log.close()
    await pending  # submitted before close: committed, not dropped
    await log.close()
    with pytest.raises(StoreClosed):
        await log.append(envs("k", ("kernel_creating",), 2))
    with pytest.raises(StoreClosed):
        await log.read_stream("k")
    with pytest.raises(StoreClosed):
        await log.undelivered()
    await log.open()
    assert await log.last_seq("k") == 1


async def test_counts_and_size(log: EventLog) -> None:
    empty = await log.size_bytes()
    body_bytes = KernelPreparing(session_id="s", image="i", config={"blob": "x" * 50_000})
    await log.append([new_envelope("k", 1, body_bytes)])
    assert await log.size_bytes() > empty
    assert await log.count() == 1


def test_fold_is_replay_per_kernel() -> None:
    a = envs("a", RUNNING_PATH)
    b = envs("b", (*RUNNING_PATH[:1], "kernel_terminated"))
    agent = [new_envelope(AGENT_STREAM, 1, AgentStarted(reason="r"))]
    interleaved = [a[0], b[0], *agent, a[1], b[1], *a[2:]]
    states = fold(interleaved)
    assert states == {"a": replay(a), "b": replay(b)}
    assert isinstance(states["a"], KernelState)
    assert states["b"].state is State.TERMINATED
    assert fold([]) == {}


def test_public_surface() -> None:
    import kernlet.store as store
    from kernlet.store import errors

    assert all(hasattr(store, name) for name in store.__all__)
    assert len(set(store.__all__)) == len(store.__all__)
    assert set(errors.__all__) <= set(store.__all__)
