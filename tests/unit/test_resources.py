"""Resources: slot amounts, plugins (cpu, mem, cuda absent or faked), reserved amounts, and
the allocator's placement rules, failures and restore."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from nvml_standin import fake_nvml

from kernlet.drivers.resources import (
    CPU,
    CUDA_DEVICE,
    CUDA_SHARES,
    MEM,
    Allocation,
    Allocator,
    SlotPool,
    apply_reserved,
    cgroup_memory_limit,
    detect_cpu,
    detect_cuda,
    detect_mem,
    detect_plugins,
    format_amount,
    gather_hwinfo,
)
from kernlet.errors import InsufficientResource, InvalidRequest, KernelAlreadyExists

GiB = 1024**3


def cpu(n: int) -> SlotPool:
    return SlotPool(CPU, {str(i): Decimal(1) for i in range(n)})


def mem(n: int) -> SlotPool:
    return SlotPool(MEM, {"0": Decimal(n)})


def node(cores: int = 4, memory: int = 8 * GiB, *extra: SlotPool) -> Allocator:
    return Allocator([cpu(cores), mem(memory), *extra])


# --- amounts -------------------------------------------------------------------------------

def test_format_amount_is_canonical() -> None:
    assert format_amount(Decimal("1.500")) == "1.5"
    assert format_amount(Decimal("1E+3")) == "1000"
    assert format_amount(Decimal("0.000")) == "0"


@pytest.mark.parametrize("bad", ["two", "-1", "NaN", "Infinity", True, None, [1]])
def test_bad_amounts_are_invalid_requests_naming_the_slot(bad: Any) -> None:
    with pytest.raises(InvalidRequest, match="cpu"):
        node().allocate("k", {"cpu": bad})


def test_amounts_off_the_quantum_are_refused() -> None:
    a = node(2, GiB, SlotPool(CUDA_SHARES, {"0": Decimal(1)}))
    with pytest.raises(InvalidRequest, match=r"cuda.shares: 0.25 is not a multiple of 0.1"):
        a.allocate("k", {"cuda.shares": "0.25"})
    with pytest.raises(InvalidRequest, match="cpu"):
        a.allocate("k", {"cpu": "0.0005"})
    assert a.allocations() == {}


def test_unknown_slot_is_invalid_and_absent_slot_is_insufficient() -> None:
    a = node()
    with pytest.raises(InvalidRequest, match="unknown resource slot 'gpu'"):
        a.allocate("k", {"gpu": 1})
    with pytest.raises(InsufficientResource, match=r"cuda\.device: requested 1, this node has none"):
        a.allocate("k", {"cpu": 1, "cuda.device": 1})
    assert a.allocate("k", {"cpu": 1, "cuda.device": 0}).slots == {"cpu": Decimal(1)}


# --- cpu: discrete, whole cores plus one shared remainder ----------------------------------

def test_whole_cpus_take_distinct_free_cores_in_order() -> None:
    a = node(4)
    x = a.allocate("x", {"cpu": 2, "mem": GiB})
    assert x.cpuset == (0, 1)
    assert x.nano_cpus == 2 * 10**9 and x.memory == GiB
    assert a.allocate("y", {"cpu": "2"}).cpuset == (2, 3)
    with pytest.raises(InsufficientResource, match=r"cpu: requested 1, free 0 of 4"):
        a.allocate("z", {"cpu": 1})


def test_fractional_cpu_shares_one_core_and_keeps_whole_cores_free() -> None:
    a = node(4)
    half = a.allocate("h", {"cpu": "0.5"})
    assert half.cpuset == (3,)  # a fresh core from the top
    assert half.nano_cpus == 500_000_000
    quarter = a.allocate("q", {"cpu": 0.25})
    assert quarter.cpuset == (3,)  # shares the partly used core
    mixed = a.allocate("m", {"cpu": "1.2"})
    assert mixed.cpuset == (0, 3)  # whole core 0, then the core holding 0.2
    assert mixed.devices["cpu"] == {"0": Decimal(1), "3": Decimal("0.2")}
    assert a.used()["cpu"] == Decimal("1.95")
    assert a.free()["cpu"] == Decimal("2.05")


def test_fragmented_cpu_is_refused_with_a_reason() -> None:
    a = node(2)
    a.allocate("a", {"cpu": "0.6"})
    a.allocate("b", {"cpu": "0.6"})  # 0.4 + 0.4 free, on two cores
    with pytest.raises(InsufficientResource, match="not enough whole free devices"):
        a.allocate("c", {"cpu": "0.8"})


def test_failure_holds_nothing_across_slots() -> None:
    a = node(4, 2 * GiB)
    before = a.device_usage()
    with pytest.raises(InsufficientResource, match=r"^mem: requested"):
        a.allocate("k", {"cpu": 2, "mem": 3 * GiB})
    assert a.device_usage() == before and a.get("k") is None


def test_release_gives_back_and_is_idempotent() -> None:
    a = node(2)
    a.allocate("k", {"cpu": "1.5", "mem": GiB})
    released = a.release("k")
    assert released is not None and released.slots["cpu"] == Decimal("1.5")
    assert a.release("k") is None
    assert a.used() == {"cpu": 0, "mem": 0}


def test_double_allocation_for_one_kernel_is_refused() -> None:
    a = node()
    a.allocate("k", {"cpu": 1})
    with pytest.raises(KernelAlreadyExists):
        a.allocate("k", {"cpu": 1})


# --- fractional maps: mem filled, cuda.shares in quanta of 0.1 -------------------------------

def test_cuda_shares_best_fit_then_fill() -> None:
    gpus = SlotPool(CUDA_SHARES, {"0": Decimal(1), "1": Decimal(1)})
    a = node(4, GiB, gpus)
    assert a.allocate("a", {"cuda.shares": "0.3"}).devices["cuda.shares"] == {"0": Decimal("0.3")}
    # best fit: the device with the least free space that still fits
    assert a.allocate("b", {"cuda.shares": "0.7"}).devices["cuda.shares"] == {"0": Decimal("0.7")}
    assert a.allocate("c", {"cuda.shares": "0.5"}).devices["cuda.shares"] == {"1": Decimal("0.5")}
    a.release("a")
    spread = a.allocate("d", {"cuda.shares": "0.8"}).devices["cuda.shares"]
    assert spread == {"1": Decimal("0.5"), "0": Decimal("0.3")}
    assert a.free()["cuda.shares"] == 0


def test_cuda_devices_are_whole() -> None:
    a = node(4, GiB, SlotPool(CUDA_DEVICE, {"0": Decimal(1), "1": Decimal(1)}))
    with pytest.raises(InvalidRequest):
        a.allocate("k", {"cuda.device": "0.5"})
    assert a.allocate("k", {"cuda.device": 2}).devices["cuda.device"] == {
        "0": Decimal(1), "1": Decimal(1)}


def test_advertised_slots_for_the_heartbeat() -> None:
    a = node(2, 3 * GiB)
    assert a.advertised_slots() == {"cpu": ("count", "2"), "mem": ("bytes", str(3 * GiB))}


# --- plain data and restore -----------------------------------------------------------------

def test_allocation_round_trips_through_plain_data_and_the_event_fields() -> None:
    a = node(4)
    alloc = a.allocate("k", {"cpu": "2.5", "mem": 123})
    plain = alloc.to_plain()
    assert plain["slots"] == {"cpu": "2.5", "mem": "123"}
    assert Allocation.from_plain(plain) == alloc
    # the kernel_creating event keeps only slots and cpuset: enough for cpu and mem
    assert Allocation.from_event(alloc.plain_slots(), alloc.cpuset) == Allocation(
        alloc.slots, {"cpu": alloc.devices["cpu"]})
    b = node(4)
    b.restore("k", Allocation.from_event(alloc.plain_slots(), alloc.cpuset))
    assert b.device_usage() == a.device_usage()
    assert b.allocations() == a.allocations()


def test_restore_refuses_cores_already_taken_and_holds_nothing() -> None:
    a = node(2)
    first = a.allocate("k1", {"cpu": 1})
    b = node(2)
    b.restore("k1", first)
    with pytest.raises(InsufficientResource, match="restore k2: cpu: device 0"):
        b.restore("k2", Allocation.from_event({"cpu": "1", "mem": "5"}, (0,)))
    assert b.used()["mem"] == 0 and b.get("k2") is None
    with pytest.raises(KernelAlreadyExists):
        b.restore("k1", first)


@pytest.mark.parametrize(("slots", "cpuset"), [({"cpu": "1.5"}, (0,)), ({"cpu": "2"}, (1, 1))])
def test_event_fields_that_do_not_match_are_refused(slots: dict[str, str],
                                                    cpuset: tuple[int, ...]) -> None:
    with pytest.raises(InvalidRequest):
        Allocation.from_event(slots, cpuset)


def test_restore_of_a_multi_device_slot_needs_its_map() -> None:
    gpus = SlotPool(CUDA_SHARES, {"0": Decimal(1), "1": Decimal(1)})
    with pytest.raises(InvalidRequest, match="needs its device map"):
        node(2, GiB, gpus).restore("k", Allocation({"cuda.shares": Decimal("0.5")}))
    with pytest.raises(InsufficientResource, match="no device 7"):
        node(2).restore("k", Allocation({"cpu": Decimal(1)}, {"cpu": {"7": Decimal(1)}}))


# --- plugins --------------------------------------------------------------------------------

def test_cpu_plugin_counts_the_affinity_cores() -> None:
    plugin = detect_cpu()
    assert plugin.info["count"] == len(os.sched_getaffinity(0))
    assert detect_cpu([5, 2]).pools[0].devices == {"2": Decimal(1), "5": Decimal(1)}


def _fake_tree(tmp: Path, meminfo_kib: int, cgroup_lines: str, files: dict[str, str]) -> None:
    (tmp / "proc/self").mkdir(parents=True)
    (tmp / "proc/meminfo").write_text(f"MemTotal:       {meminfo_kib} kB\nMemFree: 1 kB\n")
    (tmp / "proc/self/cgroup").write_text(cgroup_lines)
    for rel, text in files.items():
        (tmp / "cg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "cg" / rel).write_text(text)


def test_mem_plugin_takes_the_lower_cgroup_v1_limit(tmp_path: Path) -> None:
    _fake_tree(tmp_path, 8 * 1024 * 1024, "4:memory:/a/b\n3:cpu:/\n", {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",
        "memory/a/memory.limit_in_bytes": str(2 * GiB),
        "memory/a/b/memory.limit_in_bytes": str(3 * GiB),
    })
    plugin = detect_mem(tmp_path / "proc", tmp_path / "cg")
    assert plugin.pools[0].devices == {"0": Decimal(2 * GiB)}
    assert plugin.info == {"total": 8 * GiB, "cgroup_limit": 2 * GiB, "capacity": 2 * GiB}


def test_mem_plugin_reads_cgroup_v2_and_ignores_max(tmp_path: Path) -> None:
    _fake_tree(tmp_path, 1024 * 1024, "0::/kernlet.slice\n", {
        "cgroup.controllers": "cpu memory\n",
        "kernlet.slice/memory.max": "max\n",
    })
    assert cgroup_memory_limit(tmp_path / "proc/self/cgroup", tmp_path / "cg") is None
    assert detect_mem(tmp_path / "proc", tmp_path / "cg").info["capacity"] == GiB
    (tmp_path / "cg/kernlet.slice/memory.max").write_text(str(GiB // 2))
    assert cgroup_memory_limit(tmp_path / "proc/self/cgroup", tmp_path / "cg") == GiB // 2


def test_mem_plugin_on_this_machine() -> None:
    plugin = detect_mem()
    assert 0 < plugin.info["capacity"] <= plugin.info["total"]


def test_reserved_amounts() -> None:
    plugins = [detect_cpu([0, 1, 2]), detect_mem()]
    total = plugins[1].info["capacity"]
    pools = apply_reserved(plugins, {"cpu": 1, "mem": "536870912"})
    a = Allocator(pools)
    assert a.capacity() == {"cpu": 2, "mem": total - 512 * 1024**2}
    assert a.allocate("k", {"cpu": 2}).cpuset == (1, 2)  # core 0 is reserved
    with pytest.raises(ValueError, match="whole cores"):
        apply_reserved(plugins, {"cpu": "0.5"})
    with pytest.raises(ValueError, match="fewer than"):
        apply_reserved(plugins, {"cpu": 3})
    with pytest.raises(ValueError, match="cpu and mem"):
        apply_reserved(plugins, {"cuda.device": 1})
    assert apply_reserved(plugins, {}) == [p for pl in plugins for p in pl.pools]


def test_cuda_is_absent_without_error_here() -> None:
    # this machine and CI have no GPU: with or without pynvml installed, no plugin, no error
    assert detect_cuda() is None
    assert [p.key for p in detect_plugins()] == ["cpu", "mem"]
    assert [p.key for p in detect_plugins(cuda="off")] == ["cpu", "mem"]


def test_cuda_plugin_through_a_fake_nvml() -> None:
    nvml = fake_nvml(2)
    plugin = detect_cuda("shares", nvml=nvml)
    assert plugin is not None and nvml.calls == ["init", "shutdown"]
    assert plugin.pools == (SlotPool(CUDA_SHARES, {"0": Decimal(1), "1": Decimal(1)}),)
    info = gather_hwinfo([plugin])["cuda"]
    assert info["slots"]["cuda.shares"]["capacity"] == "2"
    assert info["devices"][1] == {"id": "1", "name": "NVIDIA H200", "uuid": "GPU-1",
                                  "memory": 141 * GiB, "compute_capability": "9.0", "minor": 1}
    device = detect_cuda("device", nvml=fake_nvml(1))
    assert device is not None and device.pools[0].spec is CUDA_DEVICE
    assert detect_cuda(nvml=fake_nvml(0)) is None
    assert detect_cuda(nvml=fake_nvml(1, fail_init=True)) is None
    with pytest.raises(ValueError, match="mode"):
        detect_cuda("mig", nvml=nvml)


def test_gather_hwinfo_is_plain_data() -> None:
    info = gather_hwinfo(detect_plugins())
    assert set(info) == {"cpu", "mem"}
    assert info["cpu"]["slots"]["cpu"]["type"] == "count"
    assert info["mem"]["slots"]["mem"]["map"] == "fractional"
    assert info["cpu"]["count"] == len(os.sched_getaffinity(0))
