"""The resource ledger: slots and ports per kernel, all or nothing, restored from the log."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kernlet.actors.ledger import Ledger
from kernlet.drivers.ports import PortPool
from kernlet.drivers.resources import CPU, CUDA_DEVICE, MEM, Allocator, SlotPool
from kernlet.errors import InsufficientResource, InvalidRequest, KernelAlreadyExists

GiB = 1024**3


def _never(_: int) -> bool:
    return False


def ledger(cores: int = 4, memory: int = 8 * GiB, ports: int = 4, gpus: int = 0) -> Ledger:
    pools = [SlotPool(CPU, {str(i): Decimal(1) for i in range(cores)}),
             SlotPool(MEM, {"0": Decimal(memory)})]
    if gpus:
        pools.append(SlotPool(CUDA_DEVICE, {str(i): Decimal(1) for i in range(gpus)}))
    return Ledger(Allocator(pools), PortPool(30000, 30000 + ports - 1, in_use=_never))


def free(led: Ledger) -> dict[str, str]:
    return {s: r["free"] for s, r in led.slot_report().items()}


def test_allocate_takes_slots_and_ports_and_release_returns_everything() -> None:
    led = ledger()
    before = free(led)
    allocation, ports = led.allocate("k1", {"cpu": "2", "mem": str(GiB)}, 2)
    assert allocation.cpuset == (0, 1)
    assert ports == (30000, 30001)
    assert led.ports_held == {30000, 30001}
    assert free(led) == {"cpu": "2", "mem": str(7 * GiB)}
    got, released = led.release("k1")  # the id is enough: the ledger knows its ports
    assert got == allocation
    assert released == ports
    assert free(led) == before
    assert led.ports_held == frozenset()
    assert led.held("k1") == (None, ())


def test_a_second_release_is_a_no_op() -> None:
    led = ledger()
    led.allocate("k1", {"cpu": "1"}, 1)
    led.release("k1")
    led.allocate("k2", {"cpu": "4"}, 4)  # everything, again
    assert led.release("k1") == (None, ())
    assert led.held("k2")[1] == (30001, 30002, 30003, 30000)  # round robin, k2 untouched


def test_port_exhaustion_leaves_nothing_held() -> None:
    led = ledger(ports=2)
    before = free(led)
    with pytest.raises(InsufficientResource, match="port"):
        led.allocate("k1", {"cpu": "1", "mem": str(GiB)}, 3)
    assert free(led) == before
    assert led.ports_held == frozenset()
    assert led.held("k1") == (None, ())
    # and the id is not left half-registered: it can allocate what fits
    _, ports = led.allocate("k1", {"cpu": "1"}, 2)
    assert len(ports) == 2


def test_slot_shortage_takes_no_port() -> None:
    led = ledger(cores=2)
    with pytest.raises(InsufficientResource, match="cpu"):
        led.allocate("k1", {"cpu": "3"}, 2)
    assert led.ports_held == frozenset()
    assert led.held("k1") == (None, ())


def test_a_kernel_cannot_allocate_twice() -> None:
    led = ledger()
    led.allocate("k1", {"cpu": "1"}, 1)
    with pytest.raises(KernelAlreadyExists):
        led.allocate("k1", {"cpu": "1"}, 1)
    assert free(led)["cpu"] == "3"
    assert len(led.ports_held) == 1


def test_restore_then_allocate_does_not_double_allocate() -> None:
    led = ledger(cores=4, ports=3, gpus=2)
    led.restore("k1", {"cpu": "2", "mem": str(GiB), "cuda.device": "1"}, (2, 3),
                {"cuda.device": {"0": "1"}}, (30000, 30002))
    assert free(led)["cpu"] == "2"
    allocation, ports = led.allocate("k2", {"cpu": "2", "cuda.device": "1"}, 1)
    assert allocation.cpuset == (0, 1)  # not k1's cores
    assert allocation.devices["cuda.device"] == {"1": Decimal(1)}  # not k1's gpu
    assert ports == (30001,)  # not k1's ports
    with pytest.raises(InsufficientResource):
        led.allocate("k3", {"cpu": "1"}, 0)
    with pytest.raises(InsufficientResource, match="port"):
        led.allocate("k3", {}, 1)
    # k1's restored ports go back on release by id, too
    assert led.release("k1")[1] == (30000, 30002)
    assert led.ports_held == {30001}


@pytest.mark.parametrize(("slots", "cpuset", "ports"), [
    ({"cpu": "1"}, (0,), ()),          # k0's core
    ({"cpu": "1"}, (3,), (30000,)),     # k0's port
    ({"cpu": "1"}, (9,), ()),          # no such core
    ({"mem": str(9 * GiB)}, (), ()),   # more than the node
])
def test_restore_of_a_conflicting_record_raises_and_holds_nothing(
    slots: dict[str, str], cpuset: tuple[int, ...], ports: tuple[int, ...]
) -> None:
    led = ledger()
    led.allocate("k0", {"cpu": "1"}, 1)
    before = free(led)
    with pytest.raises(InsufficientResource):
        led.restore("k1", slots, cpuset, None, ports)
    assert free(led) == before
    assert led.ports_held == {30000}
    assert led.held("k1") == (None, ())


def test_restore_of_a_malformed_record_or_a_held_kernel_raises() -> None:
    led = ledger()
    with pytest.raises(InvalidRequest, match="cpuset"):
        led.restore("k1", {"cpu": "2"}, (0,), None, ())
    led.restore("k1", {"cpu": "1"}, (0,), None, (30001,))
    with pytest.raises(KernelAlreadyExists):
        led.restore("k1", {"cpu": "1"}, (1,), None, ())
    with pytest.raises(KernelAlreadyExists):
        led.allocate("k1", {"cpu": "1"}, 0)
    assert free(led)["cpu"] == "3"
    assert led.ports_held == {30001}


def test_restore_of_ports_outside_the_range_is_remembered_but_not_pooled() -> None:
    led = ledger(ports=1)
    led.restore("k1", {}, (), None, (40000,))  # the range changed since
    assert led.held("k1")[1] == (40000,)
    assert led.allocate("k2", {}, 1)[1] == (30000,)
    assert led.release("k1")[1] == (40000,)


def test_slot_report_has_type_capacity_used_free() -> None:
    led = ledger(cores=2, memory=4 * GiB)
    led.allocate("k", {"cpu": "0.5"}, 0)
    assert led.slot_report()["cpu"] == {"type": "count", "capacity": "2", "used": "0.5",
                                        "free": "1.5"}
    assert led.advertised_slots()["mem"] == ("bytes", str(4 * GiB))
