"""A Hypothesis state machine over the transition table: apply agrees with the table."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fixtures.bodies import body
from kernlet.events.codec import EVENT_TYPES
from kernlet.events.lifecycle import TRANSITIONS, IllegalTransition, KernelState, State, apply
from kernlet.events.types import new_envelope

TYPES = sorted(EVENT_TYPES)


class Lifecycle(RuleBasedStateMachine):
    """The model is the table alone: a state name and a counter."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel: KernelState | None = None
        self.model: State | None = None
        self.seq = 0
        self.was_terminated = False

    def allowed(self) -> list[str]:
        return [t for t in TYPES if (self.model, t) in TRANSITIONS]

    @precondition(lambda self: bool(self.allowed()))
    @rule(data=st.data())
    def legal_event(self, data: st.DataObject) -> None:
        type_name = data.draw(st.sampled_from(self.allowed()), label="legal")
        self.kernel = apply(self.kernel, new_envelope("k", self.seq + 1, body(type_name)))
        self.model = TRANSITIONS[(self.model, type_name)]
        self.seq += 1

    @rule(type_name=st.sampled_from(TYPES))
    def any_event(self, type_name: str) -> None:
        env = new_envelope("k", self.seq + 1, body(type_name))
        if (self.model, type_name) in TRANSITIONS:
            self.kernel = apply(self.kernel, env)
            self.model = TRANSITIONS[(self.model, type_name)]
            self.seq += 1
        else:
            before = self.kernel
            with pytest.raises(IllegalTransition):
                apply(self.kernel, env)
            assert self.kernel is before

    @rule(type_name=st.sampled_from(TYPES), offset=st.integers(-3, 3).filter(lambda n: n != 1))
    def wrong_seq(self, type_name: str, offset: int) -> None:
        with pytest.raises(IllegalTransition):
            apply(self.kernel, new_envelope("k", self.seq + offset, body(type_name)))

    @invariant()
    def state_is_the_table_lookup(self) -> None:
        assert (self.kernel.state if self.kernel else None) is self.model

    @invariant()
    def seq_counts_the_accepted_events(self) -> None:
        assert (self.kernel.seq if self.kernel else 0) == self.seq

    @invariant()
    def terminated_is_final(self) -> None:
        if self.was_terminated:
            assert self.model is State.TERMINATED
        self.was_terminated = self.model is State.TERMINATED


Lifecycle.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_lifecycle = Lifecycle.TestCase
