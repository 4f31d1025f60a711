"""Hypothesis: random allocate / release sequences never exceed capacity, failures hold
nothing, whole cores are never shared, and restoring every allocation (through its plain data
or the kernel_creating event's fields) into a fresh allocator gives the same state."""

from __future__ import annotations

import math
from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kernlet.drivers.resources import (
    CPU,
    CUDA_SHARES,
    MEM,
    Allocation,
    Allocator,
    SlotPool,
)
from kernlet.errors import InsufficientResource

POOLS = [
    SlotPool(CPU, {str(i): Decimal(1) for i in range(4)}),
    SlotPool(MEM, {"0": Decimal(10_000)}),
    SlotPool(CUDA_SHARES, {"0": Decimal(1), "1": Decimal(1), "2": Decimal(1)}),
]

cpu_amounts = st.one_of(
    st.integers(0, 5).map(Decimal),
    st.integers(1, 5000).map(lambda n: Decimal(n) / 1000),
)
requests = st.fixed_dictionaries(
    {"cpu": cpu_amounts},
    optional={
        "mem": st.integers(0, 12_000),
        "cuda.shares": st.integers(0, 35).map(lambda n: Decimal(n) / 10),
    },
)


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.alloc = Allocator(POOLS)
        self.next_id = 0

    @rule(request=requests)
    def allocate(self, request: dict[str, Decimal | int]) -> None:
        kid = f"k{self.next_id}"
        self.next_id += 1
        before = (self.alloc.device_usage(), self.alloc.allocations())
        free = self.alloc.free()
        try:
            got = self.alloc.allocate(kid, request)
        except InsufficientResource as exc:
            assert (self.alloc.device_usage(), self.alloc.allocations()) == before
            slot = str(exc.message).split(":")[0]
            if slot in ("mem", "cuda.shares"):  # fractional maps only fail when short
                assert Decimal(request[slot]) > free[slot]
            return
        assert got.slots == {k: Decimal(v) for k, v in request.items() if Decimal(v) != 0}
        cpu = got.slots.get("cpu", Decimal(0))
        assert len(got.cpuset) == len(set(got.cpuset)) == math.ceil(cpu)
        assert got.nano_cpus == int(cpu * 10**9)

    @precondition(lambda self: bool(self.alloc.allocations()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        kid = data.draw(st.sampled_from(sorted(self.alloc.allocations())))
        held = self.alloc.get(kid)
        assert self.alloc.release(kid) == held
        assert self.alloc.get(kid) is None

    @invariant()
    def within_capacity(self) -> None:
        cap, used, free = self.alloc.capacity(), self.alloc.used(), self.alloc.free()
        for slot in cap:
            assert 0 <= used[slot] <= cap[slot]
            assert used[slot] + free[slot] == cap[slot]
        pools = {p.spec.name: p for p in POOLS}
        for slot, devices in self.alloc.device_usage().items():
            for dev, amount in devices.items():
                assert 0 <= amount <= pools[slot].devices[dev]

    @invariant()
    def usage_is_the_sum_of_allocations(self) -> None:
        total: dict[str, dict[str, Decimal]] = {}
        for a in self.alloc.allocations().values():
            for slot, devices in a.devices.items():
                for dev, amount in devices.items():
                    slot_total = total.setdefault(slot, {})
                    slot_total[dev] = slot_total.get(dev, Decimal(0)) + amount
        for slot, devices in self.alloc.device_usage().items():
            for dev, amount in devices.items():
                assert total.get(slot, {}).get(dev, Decimal(0)) == amount

    @invariant()
    def whole_cores_are_exclusive(self) -> None:
        holders: dict[str, list[Decimal]] = {}
        for a in self.alloc.allocations().values():
            for dev, amount in a.devices.get("cpu", {}).items():
                holders.setdefault(dev, []).append(amount)
        for amounts in holders.values():
            assert amounts == [Decimal(1)] or all(x < 1 for x in amounts)

    @invariant()
    def restore_equals_live_state(self) -> None:
        live = self.alloc.allocations()
        from_plain, from_event = Allocator(POOLS), Allocator(POOLS)
        for kid, a in live.items():
            from_plain.restore(kid, Allocation.from_plain(a.to_plain()))
            shares = {s: {d: str(x) for d, x in m.items()}
                      for s, m in a.to_plain()["devices"].items() if s == "cuda.shares"}
            from_event.restore(kid, Allocation.from_event(a.plain_slots(), a.cpuset, shares))
        for restored in (from_plain, from_event):
            assert restored.allocations() == live
            assert restored.device_usage() == self.alloc.device_usage()

    @precondition(lambda self: bool(self.alloc.allocations()))
    @rule(data=st.data())
    def restore_twice_is_refused_unless_it_fits(self, data: st.DataObject) -> None:
        kid = data.draw(st.sampled_from(sorted(self.alloc.allocations())))
        a = self.alloc.allocations()[kid]
        other = Allocator(POOLS)
        other.restore(kid, a)
        pools = {p.spec.name: p for p in POOLS}
        fits = all(2 * x <= pools[s].devices[d] for s, m in a.devices.items() for d, x in m.items())
        try:
            other.restore(kid + "-copy", a)
        except InsufficientResource:
            assert not fits
            assert other.allocations() == {kid: a}
        else:
            assert fits


AllocatorMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=25, deadline=None
)
TestAllocator = AllocatorMachine.TestCase
