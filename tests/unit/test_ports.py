"""The port pool: all-or-nothing, round robin, skips bound ports, exhaustion, restore."""

from __future__ import annotations

import socket

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kernlet.drivers.ports import PortPool, port_in_use
from kernlet.errors import InsufficientResource


def never(port: int) -> bool:
    return False


def test_acquire_release_round_robin() -> None:
    pool = PortPool(100, 104, in_use=never)
    assert pool.size == 5
    assert pool.acquire(2) == (100, 101)
    pool.release([100])
    assert pool.acquire(2) == (102, 103)  # a released port is reused last
    assert pool.acquire(2) == (104, 100)
    assert pool.free_count() == 0 and pool.held == {100, 101, 102, 103, 104}
    assert pool.acquire(0) == ()


def test_exhaustion_is_a_clear_error_and_holds_nothing() -> None:
    pool = PortPool(30000, 30002, in_use=never)
    pool.acquire(2)
    with pytest.raises(InsufficientResource, match=r"no free port in 30000-30002 \(needed 2, 1 free\)"):
        pool.acquire(2)
    assert pool.held == {30000, 30001}
    assert pool.acquire(1) == (30002,)


def test_ports_bound_by_others_are_skipped_not_held() -> None:
    busy = {101, 102}
    pool = PortPool(100, 103, in_use=lambda p: p in busy)
    assert pool.acquire(2) == (100, 103)
    with pytest.raises(InsufficientResource):
        pool.acquire(1)
    busy.clear()
    assert pool.acquire(2) == (101, 102)


def test_restore_refuses_double_use_all_or_nothing() -> None:
    pool = PortPool(100, 110, in_use=never)
    pool.restore([100, 105])
    with pytest.raises(InsufficientResource, match=r"ports \[105\] are already held"):
        pool.restore([106, 105])
    with pytest.raises(InsufficientResource, match=r"\[107\]"):
        pool.restore([107, 107])
    assert pool.held == {100, 105}
    pool.restore([99, 111])  # outside the (changed) range: not tracked
    assert pool.held == {100, 105}
    assert 105 not in pool.acquire(9)


def test_bad_ranges() -> None:
    with pytest.raises(ValueError):
        PortPool(31000, 30000)
    with pytest.raises(ValueError):
        PortPool(0, 10)
    with pytest.raises(ValueError):
        PortPool(in_use=never).acquire(-1)


def test_port_in_use_sees_a_real_listener() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use(port)
        pool = PortPool(port, port)
        with pytest.raises(InsufficientResource):
            pool.acquire(1)


class PortMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.busy: set[int] = set()
        self.pool = PortPool(1000, 1019, in_use=lambda p: p in self.busy)
        self.kernels: list[tuple[int, ...]] = []

    @rule(n=st.integers(0, 8))
    def acquire(self, n: int) -> None:
        held = self.pool.held
        available = 20 - len(held) - len(self.busy - held)
        try:
            got = self.pool.acquire(n)
        except InsufficientResource:
            assert self.pool.held == held and available < n
            return
        assert len(got) == len(set(got)) == n
        assert not set(got) & (held | self.busy)
        self.kernels.append(got)

    @precondition(lambda self: bool(self.kernels))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        ports = self.kernels.pop(data.draw(st.integers(0, len(self.kernels) - 1)))
        self.pool.release(ports)
        assert not set(ports) & self.pool.held

    @rule(port=st.integers(1000, 1019))
    def someone_binds(self, port: int) -> None:
        self.busy.symmetric_difference_update({port})

    @precondition(lambda self: bool(self.kernels))
    @rule(data=st.data())
    def restore_a_held_set_is_refused(self, data: st.DataObject) -> None:
        ports = data.draw(st.sampled_from(self.kernels))
        held = self.pool.held
        if ports:
            with pytest.raises(InsufficientResource):
                self.pool.restore(ports)
        assert self.pool.held == held

    @invariant()
    def no_leak(self) -> None:
        owned = [p for k in self.kernels for p in k]
        assert len(owned) == len(set(owned))
        assert set(owned) == self.pool.held
        fresh = PortPool(1000, 1019, in_use=never)
        for k in self.kernels:
            fresh.restore(k)
        assert fresh.held == self.pool.held


PortMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestPortPool = PortMachine.TestCase
