"""The one cgroup and /proc reader over fake trees (cgroup v1 and v2, both Docker drivers' names)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

import kernlet.drivers.cgroups as cgroups
from kernlet.drivers.cgroups import (
    CgroupReader,
    ContainerCounters,
    HostCounters,
    net_dev,
    proc_stat_cpu,
    read_meminfo,
)
from kernlet.drivers.stats import StatsCollector

CID = "c" * 64
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  1000       1    0    0    0     0          0         0     1000       1    0    0    0     0       0          0
  eth0:  {rx}       2    0    0    0     0          0         0     {tx}       2    0    0    0     0       0          0
docker0:  7777       2    0    0    0     0          0         0     7777       2    0    0    0     0       0          0
"""


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def v1_tree(root: Path, name: str) -> None:
    write(root, {
        f"memory/{name}/memory.usage_in_bytes": "5000\n",
        f"memory/{name}/memory.stat": "cache 300\ntotal_inactive_file 1000\ninactive_file 7\n",
        f"cpuacct/{name}/cpuacct.usage": "2500000000\n",
        f"blkio/{name}/blkio.throttle.io_service_bytes_recursive":
            "8:0 Read 4096\n8:0 Write 512\n8:0 Total 4608\n8:16 Read 4\nTotal 4612\n",
    })


def v2_tree(root: Path, name: str) -> None:
    write(root, {
        "cgroup.controllers": "cpu memory io\n",
        f"{name}/memory.current": "9000\n",
        f"{name}/memory.stat": "anon 10\ninactive_file 2000\ntotal_inactive_file 5\n",
        f"{name}/cpu.stat": "usage_usec 1500000\nuser_usec 900000\n",
        f"{name}/io.stat": "8:0 rbytes=100 wbytes=200 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n",
    })


def host_tree(proc: Path) -> None:
    write(proc, {
        "stat": "cpu  100 5 20 700 30 0 0 0 0 0\ncpu0 1 0 0 1\ncpu1 1 0 0 1\ncpu2 1 0 0 1\n",
        "meminfo": "MemTotal:  1000 kB\nMemFree:  100 kB\nMemAvailable:  600 kB\n",
        "net/dev": NET_DEV.format(rx=10, tx=20) + "vethab12: 8 2 0 0 0 0 0 0 8 2 0 0 0 0 0 0\n",
        "42/net/dev": "\n".join(NET_DEV.format(rx=3, tx=4).splitlines()[:4]),  # lo and eth0
    })


def test_parsers() -> None:
    assert proc_stat_cpu("cpu  10 1 2 100 3 0 0 0 0 0\ncpu0 1 2 3 4\ncpu1 1 2 3 4\n") == (13, 116, 2)
    assert proc_stat_cpu("cpu  10 1 2 100\n") == (13, 113, 0)  # an old kernel: no iowait
    assert net_dev(NET_DEV.format(rx=5, tx=6)) == (5 + 7777, 6 + 7777)
    assert net_dev(NET_DEV.format(rx=5, tx=6), ("lo", "docker")) == (5, 6)


@pytest.mark.parametrize("name", [f"docker/{CID}", f"system.slice/docker-{CID}.scope"])
def test_cgroup_v1_under_both_drivers_names(tmp_path: Path, name: str) -> None:
    v1_tree(tmp_path / "cg", name)
    host_tree(tmp_path / "proc")
    reader = CgroupReader(tmp_path / "cg", tmp_path / "proc")
    assert reader.container(CID, 42) == ContainerCounters(
        source="cgroup-v1", memory=4000, cpu_ns=2_500_000_000, io=(4100, 512), net=(3, 4))
    assert reader.container(CID) == ContainerCounters("cgroup-v1", 4000, 2_500_000_000,
                                                      (4100, 512), None)


@pytest.mark.parametrize("name", [f"docker/{CID}", f"system.slice/docker-{CID}.scope"])
def test_cgroup_v2_under_both_drivers_names(tmp_path: Path, name: str) -> None:
    v2_tree(tmp_path / "cg", name)
    host_tree(tmp_path / "proc")
    reader = CgroupReader(tmp_path / "cg", tmp_path / "proc")
    assert reader.container(CID, 42) == ContainerCounters(
        source="cgroup-v2", memory=7000, cpu_ns=1_500_000_000, io=(101, 202), net=(3, 4))


def test_missing_figures_are_none_and_a_missing_directory_is_not_found(tmp_path: Path) -> None:
    cg, proc = tmp_path / "cg", tmp_path / "proc"
    write(cg, {"memory/docker/a/memory.usage_in_bytes": "42\n",  # v1, memory only
               "docker/b/memory.current": "7\n",  # v2, memory only
               "docker/b/cpu.stat": "user_usec 5\n",  # no usage_usec
               "docker/d/memory.current": "not a number\n"})
    reader = CgroupReader(cg, proc)
    assert reader.container("a") == ContainerCounters("cgroup-v1", 42)
    assert reader.container("b", pid=99) == ContainerCounters("cgroup-v2", 7)  # pid 99 gone
    assert reader.container("d") is None and reader.container("e") is None
    reading = reader.read({"a": None, "e": None})
    assert list(reading.containers) == ["a"]
    assert reading.host == HostCounters()  # no /proc tree: nothing read, nothing raised


def test_a_container_found_once_is_read_again_where_it_is_now(tmp_path: Path) -> None:
    """The reader keeps where it found a container's files; when they go, it looks again."""
    import shutil

    cg, proc = tmp_path / "cg", tmp_path / "proc"
    v1_tree(cg, f"docker/{CID}")
    reader = CgroupReader(cg, proc)
    assert reader.read({CID: None}).containers[CID].memory == 4000
    write(cg, {f"memory/docker/{CID}/memory.usage_in_bytes": "6000\n"})
    assert reader.read({CID: None}).containers[CID].memory == 5000  # read again, not kept
    for controller in ("memory", "cpuacct", "blkio"):
        shutil.rmtree(cg / controller / "docker")
    assert reader.read({CID: None}).containers == {}  # gone
    v2_tree(cg, f"system.slice/docker-{CID}.scope")
    assert reader.container(CID) == ContainerCounters(
        "cgroup-v2", 7000, 1_500_000_000, (101, 202), None)


def test_host_figures(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    host_tree(proc)
    host = CgroupReader(tmp_path / "cg", proc).host(disk=tmp_path)
    assert host.cpu == (125, 855, 3)  # idle 700 and iowait 30 are not busy
    assert (host.mem_total, host.mem_available) == (1000 * 1024, 600 * 1024)
    assert host.net == (10, 20)  # lo, docker0 and veth left out
    assert host.disk is not None and 0 < host.disk[0] <= host.disk[1]
    assert CgroupReader(tmp_path / "cg", proc).host().disk is None
    write(proc, {"meminfo": "MemTotal: 8 kB\nMemFree: 2 kB\n"})  # kernels before 3.14
    assert read_meminfo(proc) == (8 * 1024, 2 * 1024)


async def test_aread_reads_a_whole_sample_on_one_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1_tree(tmp_path / "cg", f"docker/{CID}")
    host_tree(tmp_path / "proc")
    threads: set[int] = set()
    real = cgroups._read

    def read(path: str) -> bytes | None:
        threads.add(threading.get_ident())
        return real(path)

    monkeypatch.setattr(cgroups, "_read", read)
    reading = await CgroupReader(tmp_path / "cg", tmp_path / "proc").aread({CID: 42})
    assert reading.containers[CID].net == (3, 4) and reading.host.net == (10, 20)
    assert len(threads) == 1 and threading.get_ident() not in threads


class _Collector(StatsCollector):
    async def _pid(self, cid: str) -> int:
        self._pids[cid] = 42
        return 42


async def test_a_stats_sample_reads_no_file_on_the_loop_and_hops_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v2_tree(tmp_path / "cg", f"system.slice/docker-{CID}.scope")
    host_tree(tmp_path / "proc")
    loop_thread = threading.get_ident()
    on_loop: list[str] = []
    hops: list[object] = []
    real_read, real_statvfs, real_hop = cgroups._read, cgroups.os.statvfs, asyncio.to_thread

    def read(path: str) -> bytes | None:
        if threading.get_ident() == loop_thread:
            on_loop.append(path)
        return real_read(path)

    def statvfs(path: Any) -> Any:
        if threading.get_ident() == loop_thread:
            on_loop.append(f"statvfs {path}")
        return real_statvfs(path)

    async def to_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(func)
        return await real_hop(func, *args, **kwargs)

    monkeypatch.setattr(cgroups, "_read", read)
    monkeypatch.setattr(cgroups.os, "statvfs", statvfs)
    monkeypatch.setattr(cgroups.asyncio, "to_thread", to_thread)
    c = _Collector(disk_path=tmp_path, cgroup_root=tmp_path / "cg", proc_root=tmp_path / "proc")
    for _ in range(2):
        node, conts = await c.sample([CID])
    assert on_loop == []
    assert len(hops) == 2  # one per sample
    assert conts[CID].source == "cgroup-v2" and (conts[CID].net_rx, conts[CID].net_tx) == (3, 4)
    assert node.cpu_count == 3 and node.mem_used == 400 * 1024
