"""Stats parsing and rates over fake /proc and cgroup trees (v1 and v2), with a fake clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kernlet.drivers.cgroups import net_dev, proc_stat_cpu
from kernlet.drivers.stats import StatsCollector, _docker_raw, _Raw

CID = "a" * 64
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  1000       1    0    0    0     0          0         0     1000       1    0    0    0     0       0          0
  eth0:  {rx}       2    0    0    0     0          0         0     {tx}       2    0    0    0     0       0          0
docker0:  7777       2    0    0    0     0          0         0     7777       2    0    0    0     0       0          0
vethab12:  8888       2    0    0    0     0          0         0     8888       2    0    0    0     0       0          0
"""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Collector(StatsCollector):
    """No Docker: the init pid is fixed and the stats API finds nothing."""

    async def _pid(self, cid: str) -> int:
        self._pids[cid] = 42
        return 42

    async def _from_docker(self, cid: str) -> _Raw | None:
        return None


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def proc(root: Path, busy: int, idle: int, rx: int = 10, tx: int = 20) -> None:
    write(root / "proc", {
        "stat": f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0\ncpu1 1 0 0 1 0 0 0 0\n",
        "meminfo": "MemTotal:  1000 kB\nMemFree:  100 kB\nMemAvailable:  600 kB\n",
        "net/dev": NET_DEV.format(rx=rx, tx=tx),
        "42/net/dev": "\n".join(NET_DEV.format(rx=rx * 2, tx=tx * 2).splitlines()[:4]),
    })


def cgroup_v1(root: Path, cpu_ns: int) -> None:
    write(root / "cg", {
        f"cpuacct/docker/{CID}/cpuacct.usage": f"{cpu_ns}\n",
        f"memory/docker/{CID}/memory.usage_in_bytes": "5000\n",
        f"memory/docker/{CID}/memory.stat": "cache 300\ntotal_inactive_file 1000\n",
        f"blkio/docker/{CID}/blkio.throttle.io_service_bytes_recursive":
            "8:0 Read 4096\n8:0 Write 512\n8:0 Total 4608\n8:16 Read 4\nTotal 4612\n",
    })


def test_parsers() -> None:
    assert proc_stat_cpu("cpu  10 1 2 100 3 0 0 0 0 0\ncpu0 1 2 3 4\ncpu1 1 2 3 4\n") == (13, 116, 2)
    assert net_dev(NET_DEV.format(rx=5, tx=6)) == (5 + 7777 + 8888, 6 + 7777 + 8888)
    assert net_dev(NET_DEV.format(rx=5, tx=6), ("lo", "veth", "docker")) == (5, 6)


async def test_cgroup_v1_container_and_node_rates(tmp_path: Path) -> None:
    clock = Clock()
    proc(tmp_path, busy=100, idle=100)
    cgroup_v1(tmp_path, cpu_ns=2_000_000_000)
    c = Collector(disk_path=tmp_path, cgroup_root=tmp_path / "cg", proc_root=tmp_path / "proc",
                  clock=clock)
    node, conts = await c.sample([CID])
    assert node.cpu_util is None and conts[CID].cpu_util is None  # one sample: no rate yet
    assert node.cpu_count == 2 and node.mem_total == 1000 * 1024
    assert node.mem_used == 400 * 1024 and node.disk_total > 0
    assert (node.net_rx, node.net_tx) == (10, 20)  # lo, docker0 and veth left out
    s = conts[CID]
    assert (s.mem, s.io_read, s.io_write, s.cpu_used) == (4000, 4100, 512, 2000)
    assert (s.net_rx, s.net_tx, s.source) == (20, 40, "cgroup-v1")

    clock.now += 2.0
    proc(tmp_path, busy=250, idle=150)  # 150 busy of 200 jiffies on 2 cpus: 150 % of one core
    cgroup_v1(tmp_path, cpu_ns=3_500_000_000)  # 1.5 s of CPU in 2 s
    node, conts = await c.sample([CID])
    assert node.cpu_util == 150.0
    assert conts[CID].cpu_util == 75.0


async def test_cgroup_v2_container(tmp_path: Path) -> None:
    clock = Clock()
    proc(tmp_path, busy=1, idle=1)
    base = f"cg/system.slice/docker-{CID}.scope"
    write(tmp_path, {
        "cg/cgroup.controllers": "cpu memory io\n",
        f"{base}/cpu.stat": "usage_usec 1000000\nuser_usec 900000\n",
        f"{base}/memory.current": "9000\n",
        f"{base}/memory.stat": "anon 10\ninactive_file 2000\n",
        f"{base}/io.stat": "8:0 rbytes=100 wbytes=200 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n",
    })
    c = Collector(disk_path=tmp_path, cgroup_root=tmp_path / "cg", proc_root=tmp_path / "proc",
                  clock=clock)
    await c.sample([CID])
    clock.now += 1.0
    write(tmp_path, {f"{base}/cpu.stat": "usage_usec 1990000\n"})
    _, conts = await c.sample([CID])
    s = conts[CID]
    assert s.source == "cgroup-v2" and s.cpu_util is not None and round(s.cpu_util) == 99
    assert (s.mem, s.io_read, s.io_write, s.cpu_used) == (7000, 101, 202, 1990)


async def test_a_vanished_container_is_left_out_and_forgotten(tmp_path: Path) -> None:
    proc(tmp_path, busy=1, idle=1)
    cgroup_v1(tmp_path, cpu_ns=1)
    c = Collector(disk_path=tmp_path, cgroup_root=tmp_path / "cg", proc_root=tmp_path / "proc")
    _, conts = await c.sample([CID, "b" * 64])
    assert list(conts) == [CID]
    (tmp_path / "proc/42/net/dev").unlink()  # the container's init process is gone
    _, conts = await c.sample([CID])
    assert conts == {} and c._prev == {} and c._pids == {}


def test_docker_stats_documents() -> None:
    v1: dict[str, Any] = {
        "cpu_stats": {"cpu_usage": {"total_usage": 23618993}},
        "memory_stats": {"usage": 843776, "stats": {"total_inactive_file": 4096}},
        "blkio_stats": {"io_service_bytes_recursive": [
            {"major": 8, "minor": 0, "op": "Read", "value": 10},
            {"major": 8, "minor": 0, "op": "Write", "value": 20},
            {"major": 8, "minor": 0, "op": "Total", "value": 30}]},
        "networks": {"eth0": {"rx_bytes": 200, "tx_bytes": 5}, "eth1": {"rx_bytes": 1}},
    }
    assert _docker_raw(v1) == _Raw(23618993, 843776 - 4096, 10, 20, 201, 5, "docker")
    v2 = {"cpu_stats": {"cpu_usage": {"total_usage": 5}},
          "memory_stats": {"usage": 100, "stats": {"inactive_file": 40}},
          "blkio_stats": {"io_service_bytes_recursive": [{"op": "read", "value": 3},
                                                         {"op": "write", "value": 4}]}}
    assert _docker_raw(v2) == _Raw(5, 60, 3, 4, 0, 0, "docker")
    assert _docker_raw({"memory_stats": {"usage": 1}, "blkio_stats": {}}).io_read == 0
