"""The transition table, pair by pair: every (state, event type) is either in it or illegal."""

from __future__ import annotations

import dataclasses

import pytest

from fixtures.bodies import body
from kernlet.events.codec import EVENT_TYPES
from kernlet.events.lifecycle import (
    TRANSITIONS,
    IllegalTransition,
    KernelState,
    State,
    accepts,
    apply,
    is_live,
    replay,
)
from kernlet.events.types import (
    ContainerCreated,
    Envelope,
    ExecutionFinished,
    ExecutionStarted,
    KernelCreating,
    KernelPreparing,
    KernelStarted,
    KernelTerminated,
    new_envelope,
)

STATES: list[State | None] = [None, *State]
TYPES = sorted(EVENT_TYPES)
ALL_PAIRS = [(state, t) for state in STATES for t in TYPES]
LEGAL = [pair for pair in ALL_PAIRS if pair in TRANSITIONS]
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in TRANSITIONS]


def at(state: State | None, seq: int = 3) -> KernelState | None:
    return None if state is None else KernelState(kernel_id="k", state=state, seq=seq)


def next_env(state: KernelState | None, type_name: str) -> Envelope:
    return new_envelope("k", (state.seq if state else 0) + 1, body(type_name), now=7.0)


def pair_id(pair: tuple[State | None, str]) -> str:
    return f"{pair[0].value if pair[0] else 'none'}-{pair[1]}"


def test_the_table_speaks_only_of_known_states_and_types() -> None:
    assert set(TRANSITIONS) <= set(ALL_PAIRS)
    assert len(LEGAL) + len(ILLEGAL) == len(STATES) * len(TYPES)
    assert {state for state, _ in LEGAL} == set(STATES) - {State.TERMINATED}


@pytest.mark.parametrize("pair", ILLEGAL, ids=pair_id)
def test_a_pair_outside_the_table_is_illegal(pair: tuple[State | None, str]) -> None:
    before, type_name = pair
    state = at(before)
    assert not accepts(state, type_name)
    with pytest.raises(IllegalTransition) as caught:
        apply(state, next_env(state, type_name))
    assert (caught.value.kernel_id, caught.value.state, caught.value.event_type) == (
        "k",
        before,
        type_name,
    )


@pytest.mark.parametrize("pair", LEGAL, ids=pair_id)
def test_a_pair_in_the_table_goes_where_it_says(pair: tuple[State | None, str]) -> None:
    before, type_name = pair
    state = at(before)
    assert accepts(state, type_name)
    env = next_env(state, type_name)
    after = apply(state, env)
    assert after.state is TRANSITIONS[pair]
    assert (after.kernel_id, after.seq, after.updated_at) == ("k", env.seq, 7.0)


def test_terminated_is_final() -> None:
    assert not [t for t in TYPES if accepts(at(State.TERMINATED), t)]
    assert not is_live(at(State.TERMINATED))
    assert all(is_live(at(s)) for s in State if s is not State.TERMINATED)


@pytest.mark.parametrize("pair", LEGAL, ids=pair_id)
@pytest.mark.parametrize("offset", [-1, 0, 2, 5])
def test_seq_must_be_the_next_one(pair: tuple[State | None, str], offset: int) -> None:
    current = at(pair[0])
    good = next_env(current, pair[1])
    with pytest.raises(IllegalTransition, match="seq"):
        apply(current, dataclasses.replace(good, seq=good.seq + offset - 1))


def test_apply_carries_the_payload_into_the_state() -> None:
    stream = [
        new_envelope("k", 1, KernelPreparing("sess", "img", {"a": 1}), now=1.0),
        new_envelope("k", 2, KernelCreating({"cpu": "1"}, (0, 1), (30000,), "/s"), now=2.0),
        new_envelope("k", 3, ContainerCreated("c1"), now=3.0),
        new_envelope("k", 4, KernelStarted("c1", {"host": "h"}), now=4.0),
        new_envelope("k", 5, ExecutionStarted("r1", "query"), now=5.0),
    ]
    state = replay(stream)
    assert state is not None
    assert (state.session_id, state.image, state.config) == ("sess", "img", {"a": 1})
    assert (state.slots, state.cpuset, state.ports, state.scratch_dir) == (
        {"cpu": "1"},
        (0, 1),
        (30000,),
        "/s",
    )
    assert (state.container_id, state.info, state.current_run, state.executions) == (
        "c1",
        {"host": "h"},
        "r1",
        1,
    )
    assert (state.created_at, state.updated_at) == (1.0, 5.0)
    other = apply(state, new_envelope("k", 6, ExecutionFinished("r0", "finished"), now=6.0))
    assert other.current_run == "r1"  # another run's end leaves the current one
    done = apply(other, new_envelope("k", 7, ExecutionFinished("r1", "finished"), now=7.0))
    assert done.current_run == ""
    gone = apply(done, new_envelope("k", 8, KernelTerminated("user", 137), now=8.0))
    assert (gone.state, gone.reason, gone.exit_code) == (State.TERMINATED, "user", 137)
    assert state.seq == 5  # apply made new states; the old ones are untouched
