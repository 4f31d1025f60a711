"""Node and container statistics from /proc and cgroups, Docker's stats API as the fallback.

A sample reads a few small files per container (cgroup v1 or v2 accounting files and the
container's /proc/<pid>/net/dev); those reads are tiny and done on the event loop. Docker is
asked only for a container's init pid (once, then cached) and for a one-shot stats document
when no cgroup directory is found. Utilization needs two samples: :class:`StatsCollector`
keeps the previous counters. cpu_util is in percent of one core (2 busy cores = 200), like
``docker stats``; the first sample of a node or container has ``cpu_util = None``.
aiodocker errors are translated by the Docker driver's one translator,
:func:`kernlet.drivers.docker.translated`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiodocker

from kernlet.drivers.docker import translated
from kernlet.errors import ContainerNotFound, DockerError

__all__ = ["ContainerStats", "NodeStats", "StatsCollector", "net_dev", "proc_stat_cpu"]

log = logging.getLogger(__name__)

#: interfaces left out of the node's net counters: loopback, and the bridges and veth pairs
#: that carry containers' traffic a second time
_VIRTUAL = ("lo", "veth", "docker", "br-")


@dataclass(frozen=True, slots=True)
class NodeStats:
    time: float  #: UTC epoch seconds
    cpu_util: float | None  #: percent of one core since the previous sample
    cpu_count: int
    mem_used: int  #: bytes: MemTotal - MemAvailable
    mem_total: int
    disk_used: int  #: bytes on the file system of the collector's disk path
    disk_total: int
    net_rx: int  #: bytes since boot, physical interfaces
    net_tx: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ContainerStats:
    container_id: str
    time: float
    cpu_util: float | None  #: percent of one core since the previous sample
    cpu_used: int  #: ms of CPU time since the container started
    mem: int  #: bytes: usage minus inactive file cache (as docker stats shows)
    io_read: int  #: bytes read from block devices
    io_write: int
    net_rx: int  #: bytes, the container's interfaces (loopback left out)
    net_tx: int
    source: str  #: "cgroup-v1", "cgroup-v2" or "docker"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Raw:
    cpu_ns: int
    mem: int
    io_read: int
    io_write: int
    net_rx: int
    net_tx: int
    source: str


def proc_stat_cpu(text: str) -> tuple[int, int, int]:
    """(busy jiffies, total jiffies, cpu count) from /proc/stat."""
    busy = total = count = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:9]]
            total = sum(v)
            busy = total - v[3] - v[4]  # idle, iowait
        elif line.startswith("cpu"):
            count += 1
    return busy, total, count


def net_dev(text: str, skip: tuple[str, ...] = ("lo",)) -> tuple[int, int]:
    """(rx bytes, tx bytes) summed over the interfaces of a /proc/.../net/dev file."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        if name.strip().startswith(skip):
            continue
        v = counters.split()
        rx, tx = rx + int(v[0]), tx + int(v[8])
    return rx, tx


def _kv(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _blkio_v1(text: str) -> tuple[int, int]:
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            read += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            write += int(parts[2])
    return read, write


def _io_v2(text: str) -> tuple[int, int]:
    read = write = 0
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        read += int(fields.get("rbytes", 0))
        write += int(fields.get("wbytes", 0))
    return read, write


def _docker_raw(doc: dict[str, Any]) -> _Raw:
    """Counters from one Docker stats document (API 1.41, cgroup v1 or v2)."""
    mem = doc.get("memory_stats") or {}
    extra = mem.get("stats") or {}
    inactive = extra.get("total_inactive_file", extra.get("inactive_file", 0))
    io = (doc.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    nets = (doc.get("networks") or {}).values()
    return _Raw(
        cpu_ns=int(((doc.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage", 0)),
        mem=max(0, int(mem.get("usage", 0)) - int(inactive)),
        io_read=sum(int(e["value"]) for e in io if str(e.get("op")).lower() == "read"),
        io_write=sum(int(e["value"]) for e in io if str(e.get("op")).lower() == "write"),
        net_rx=sum(int(n.get("rx_bytes", 0)) for n in nets),
        net_tx=sum(int(n.get("tx_bytes", 0)) for n in nets),
        source="docker",
    )


class StatsCollector:
    """Samples the node and the given containers; keeps the previous sample for rates."""

    def __init__(
        self,
        docker_url: str = "unix:///var/run/docker.sock",
        disk_path: Path = Path("/"),
        *,
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        proc_root: Path = Path("/proc"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = docker_url
        self._docker: aiodocker.Docker | None = None
        self._disk = disk_path
        self._cg = cgroup_root
        self._proc = proc_root
        self._clock = clock
        self._v2 = (cgroup_root / "cgroup.controllers").exists()
        self._pids: dict[str, int] = {}
        self._prev_node: tuple[int, int] | None = None
        self._prev: dict[str, tuple[float, int]] = {}

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    @property
    def _d(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self._url)
        return self._docker

    async def sample(
        self, container_ids: Iterable[str]
    ) -> tuple[NodeStats, dict[str, ContainerStats]]:
        """One sample of the node and of each container that still exists (full ids)."""
        ids = list(dict.fromkeys(container_ids))
        raws = await asyncio.gather(*(self._container(cid) for cid in ids))
        now, mono = time.time(), self._clock()
        node = self._node(now)
        out: dict[str, ContainerStats] = {}
        for cid, raw in zip(ids, raws, strict=True):
            if raw is None:
                continue
            prev = self._prev.get(cid)
            util = None
            if prev is not None and mono > prev[0]:
                util = max(0.0, (raw.cpu_ns - prev[1]) / ((mono - prev[0]) * 1e9) * 100)
            self._prev[cid] = (mono, raw.cpu_ns)
            out[cid] = ContainerStats(
                container_id=cid, time=now, cpu_util=util, cpu_used=raw.cpu_ns // 1_000_000,
                mem=raw.mem, io_read=raw.io_read, io_write=raw.io_write,
                net_rx=raw.net_rx, net_tx=raw.net_tx, source=raw.source,
            )
        for gone in set(self._prev) - set(out):
            del self._prev[gone]
            self._pids.pop(gone, None)
        return node, out

    def _node(self, now: float) -> NodeStats:
        busy, total, count = proc_stat_cpu((self._proc / "stat").read_text())
        util = None
        if self._prev_node is not None and total > self._prev_node[1]:
            d_busy, d_total = busy - self._prev_node[0], total - self._prev_node[1]
            util = d_busy / d_total * 100 * count
        self._prev_node = (busy, total)
        mem = _kv((self._proc / "meminfo").read_text().replace(" kB", "").replace(":", ""))
        fs = os.statvfs(self._disk)
        rx, tx = net_dev((self._proc / "net/dev").read_text(), _VIRTUAL)
        return NodeStats(
            time=now, cpu_util=util, cpu_count=count,
            mem_used=(mem["MemTotal"] - mem.get("MemAvailable", mem.get("MemFree", 0))) * 1024,
            mem_total=mem["MemTotal"] * 1024,
            disk_used=(fs.f_blocks - fs.f_bfree) * fs.f_frsize,
            disk_total=fs.f_blocks * fs.f_frsize,
            net_rx=rx, net_tx=tx,
        )

    async def _container(self, cid: str) -> _Raw | None:
        """Counters of one container; None if it is gone, not running, or Docker fails."""
        try:
            raw = await self._from_cgroup(cid)
            return raw if raw is not None else await self._from_docker(cid)
        except ContainerNotFound:
            return None
        except DockerError as exc:
            log.warning("stats of container %s skipped: %s", cid[:12], exc)
            return None

    def _cgroup_dirs(self, cid: str) -> list[Path]:
        names = (f"docker/{cid}", f"system.slice/docker-{cid}.scope")
        if self._v2:
            return [self._cg / n for n in names]
        return [self._cg / c / n for n in names for c in ("cpuacct", "memory", "blkio")]

    async def _from_cgroup(self, cid: str) -> _Raw | None:
        dirs = [d for d in self._cgroup_dirs(cid) if d.is_dir()]
        if not dirs or (not self._v2 and len(dirs) != 3):
            return None
        pid = self._pids.get(cid) or await self._pid(cid)
        try:
            rx, tx = net_dev((self._proc / str(pid) / "net/dev").read_text())
            if self._v2:
                (d,) = dirs
                cpu_ns = _kv((d / "cpu.stat").read_text())["usage_usec"] * 1000
                mem = int((d / "memory.current").read_text())
                inactive = _kv((d / "memory.stat").read_text()).get("inactive_file", 0)
                io_r, io_w = _io_v2((d / "io.stat").read_text())
                source = "cgroup-v2"
            else:
                cpu_d, mem_d, blk_d = dirs
                cpu_ns = int((cpu_d / "cpuacct.usage").read_text())
                mem = int((mem_d / "memory.usage_in_bytes").read_text())
                inactive = _kv((mem_d / "memory.stat").read_text()).get("total_inactive_file", 0)
                io_r, io_w = _blkio_v1(
                    (blk_d / "blkio.throttle.io_service_bytes_recursive").read_text()
                )
                source = "cgroup-v1"
        except (OSError, KeyError, ValueError):
            self._pids.pop(cid, None)  # the container went away or restarted
            return None
        return _Raw(cpu_ns, max(0, mem - inactive), io_r, io_w, rx, tx, source)

    async def _pid(self, cid: str) -> int:
        with translated(f"inspect container {cid[:12]}"):
            raw = await self._d.containers.container(cid).show()
        pid = int((raw.get("State") or {}).get("Pid") or 0)
        if pid <= 0:
            raise ContainerNotFound(f"container {cid[:12]} is not running")
        self._pids[cid] = pid
        return pid

    async def _from_docker(self, cid: str) -> _Raw | None:
        with translated(f"stats of container {cid[:12]}"):
            # aiodocker's public stats(stream=False) has no one-shot parameter, and without it
            # Docker waits a second for a second sample; so the request itself, by _query
            async with self._d._query(
                f"containers/{cid}/stats", params={"stream": "0", "one-shot": "1"}
            ) as resp:
                doc = await resp.json()
        if not doc.get("memory_stats"):  # a container that is not running reports nothing
            return None
        return _docker_raw(doc)
