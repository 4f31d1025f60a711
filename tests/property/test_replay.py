"""Replay equals live state: random operations over several kernels, checked at random points.

The model applies each event as the actors do (``apply`` before ``append``); at random points
the log's replay (the fold of every read stream, and ``live_kernels``, also after a reopen) must
equal it. Runs against the memory log and, with fewer examples, a SQLite file.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.bodies import body
from kernlet.events.lifecycle import (
    TRANSITIONS,
    IllegalTransition,
    KernelState,
    accepts,
    apply,
    is_live,
)
from kernlet.events.types import (
    AGENT_STREAM,
    AgentError,
    Envelope,
    EventBody,
    ExecutionFinished,
    KernelCreating,
    KernelPreparing,
    KernelStarted,
    new_envelope,
)
from kernlet.store import EventLog, MemoryEventLog, SQLiteEventLog, fold

KERNELS = ("k0", "k1", "k2")
#: the event types of kernel streams: those the transition table knows
KERNEL_TYPES = sorted({type_name for _, type_name in TRANSITIONS})

ENDINGS = ("kernel_terminating", "kernel_terminated")

Op = tuple[str, int, int]
ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["event", "event", "event", "event", "burst", "agent", "check", "reopen"]),
        st.integers(0, len(KERNELS) - 1),
        st.integers(0, 1_000),
    ),
    min_size=20,
    max_size=80,
)


def make_body(type_name: str, n: int, state: KernelState | None) -> EventBody:
    """A body of the type with varied payload, so the codec round trip is exercised too."""
    if type_name == KernelPreparing.TYPE:
        return KernelPreparing(f"s{n}", f"img{n % 3}", {"n": n, "l": [1, "a", None], "d": {}})
    if type_name == KernelCreating.TYPE:
        return KernelCreating({"cpu": str(n % 4)}, (n % 8, 9), (30000 + n,), f"/scratch/{n}")
    if type_name == KernelStarted.TYPE:
        return KernelStarted(f"c{n}", {"host": "h", "ports": [n, n + 1], "ok": True})
    if type_name == ExecutionFinished.TYPE:
        run = state.current_run if state and state.current_run and n % 4 else f"r{n}"
        return ExecutionFinished(run, "finished", n % 3 or None)
    return body(type_name, str(n))


class Model:
    """What the actors know: each kernel's state, built by applying as they go."""

    def __init__(self) -> None:
        self.states: dict[str, KernelState] = {}
        self.agent_seq = 0

    def next_event(self, kernel_id: str, n: int) -> Envelope | None:
        state = self.states.get(kernel_id)
        legal = [t for t in KERNEL_TYPES if accepts(state, t)]
        if not legal:
            return None
        onward = [t for t in legal if t not in ENDINGS]
        if onward and n % 8:  # mostly move on, so kernels get to run before they end
            legal = onward
        seq = (state.seq if state else 0) + 1
        env = new_envelope(kernel_id, seq, make_body(legal[n % len(legal)], n, state), now=n)
        self.states[kernel_id] = apply(state, env)
        return env

    def live(self) -> dict[str, KernelState]:
        return {k: s for k, s in self.states.items() if is_live(s)}


async def run(
    ops: list[Op], log: EventLog, reopen: Callable[[EventLog], Awaitable[EventLog]]
) -> None:
    model = Model()

    async def check(log: EventLog) -> None:
        streams = [e for k in await log.kernel_ids() for e in await log.read_stream(k)]
        assert fold(streams) == model.states
        assert await log.live_kernels() == model.live()
        assert await log.count() == sum(s.seq for s in model.states.values()) + model.agent_seq

    for kind, k, n in ops:
        kernel_id = KERNELS[k]
        if kind == "event":
            env = model.next_event(kernel_id, n)
            if env is None:  # terminated: the log must refuse anything more
                state = model.states[kernel_id]
                with pytest.raises(IllegalTransition):
                    await log.append(
                        [
                            new_envelope(
                                kernel_id, state.seq + 1, make_body(KernelPreparing.TYPE, n, state)
                            )
                        ]
                    )
            else:
                await log.append([env])
        elif kind == "burst":  # every kernel at once, some two events in one append
            appends = []
            for i, kid in enumerate(KERNELS):
                envs = [
                    e for e in (model.next_event(kid, n + i) for _ in range(1 + (n + i) % 2)) if e
                ]
                appends.append(log.append(envs))
            await asyncio.gather(*appends)
        elif kind == "agent":
            model.agent_seq += 1
            await log.append([new_envelope(AGENT_STREAM, model.agent_seq, AgentError(f"e{n}"))])
        elif kind == "check":
            await check(log)
            if kernel_id in model.states:
                after = n % (model.states[kernel_id].seq + 1)
                tail = await log.read_stream(kernel_id, after_seq=after)
                assert [e.seq for e in tail] == list(
                    range(after + 1, model.states[kernel_id].seq + 1)
                )
        else:
            log = await reopen(log)
            assert await log.live_kernels() == model.live()
    log = await reopen(log)
    await check(log)
    assert await log.last_seq(AGENT_STREAM) == model.agent_seq
    await log.close()


@settings(max_examples=60, deadline=None)
@given(ops=ops_strategy)
async def test_replay_equals_live_state_in_memory(ops: list[Op]) -> None:
    log = MemoryEventLog()

    async def reopen(log: EventLog) -> EventLog:
        await log.close()
        await log.open()
        return log

    await log.open()
    await run(ops, log, reopen)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy)
async def test_replay_equals_live_state_in_sqlite(ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.db"

        async def reopen(log: EventLog) -> EventLog:
            await log.close()
            again = SQLiteEventLog(path)
            await again.open()
            return again

        log = SQLiteEventLog(path)
        await log.open()
        try:
            await run(ops, log, reopen)
        finally:
            await log.close()
