"""Node and container statistics from /proc and cgroups, Docker's stats API as the fallback.

A sample reads a few small files per container (cgroup v1 or v2 accounting files and the
container's /proc/<pid>/net/dev) and the host's /proc figures with the one cgroup reader,
:class:`kernlet.drivers.cgroups.CgroupReader`, in one ``asyncio.to_thread`` hop: no file is
read on the event loop. Docker is asked only for a container's init pid (once, before its
first read, then cached) and for a one-shot stats document when no cgroup directory of the
container is found, or one without its CPU or block I/O figures. Utilization needs two
samples: :class:`StatsCollector` keeps the previous counters. cpu_util is in percent of one
core (2 busy cores = 200), like ``docker stats``; the first sample of a node or container has
``cpu_util = None``.
aiodocker errors are translated by the Docker driver's one translator,
:func:`kernlet.drivers.docker.translated`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiodocker

from kernlet.drivers.cgroups import CgroupReader, HostCounters
from kernlet.drivers.docker import translated
from kernlet.errors import ContainerNotFound, DockerError, DriverError

__all__ = ["ContainerStats", "NodeStats", "StatsCollector"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


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
        self._reader = CgroupReader(cgroup_root, proc_root)
        self._clock = clock
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
        """One sample of the node and of each container that still exists (full ids).

        In order: the init pids not cached yet, from Docker (concurrently); every file, in
        one hop off the loop; Docker's stats API for the containers not found in cgroups.
        """
        ids = list(dict.fromkeys(container_ids))
        new = [cid for cid in ids if cid not in self._pids]
        await asyncio.gather(*(self._guarded(cid, self._pid(cid)) for cid in new))
        running = {cid: self._pids[cid] for cid in ids if cid in self._pids}
        reading = await self._reader.aread(running, disk=self._disk)
        raws: dict[str, _Raw | None] = {}
        fallback: list[str] = []
        for cid in running:
            c = reading.containers.get(cid)
            if c is None or c.cpu_ns is None or c.io is None:
                fallback.append(cid)  # no cgroup directory, or one without these figures
            elif c.net is not None:  # (without: its init process is gone, it is left out)
                raws[cid] = _Raw(c.cpu_ns, c.memory, *c.io, *c.net, c.source)
        docs = await asyncio.gather(*(self._guarded(c, self._from_docker(c)) for c in fallback))
        raws.update(zip(fallback, docs, strict=True))
        now, mono = time.time(), self._clock()
        node = self._node(now, reading.host)
        out: dict[str, ContainerStats] = {}
        for cid, raw in raws.items():
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
        for gone in set(self._pids) - set(out):  # gone, stopped or restarted: ask again
            del self._pids[gone]
        return node, out

    def _node(self, now: float, host: HostCounters) -> NodeStats:
        cpu, net, disk = host.cpu, host.net, host.disk
        if cpu is None or net is None or disk is None or not host.mem_total:
            raise DriverError(f"node stats unreadable under {self._reader.proc_root} "
                              f"and {self._disk}: {host}")
        busy, total, count = cpu
        util = None
        if self._prev_node is not None and total > self._prev_node[1]:
            d_busy, d_total = busy - self._prev_node[0], total - self._prev_node[1]
            util = d_busy / d_total * 100 * count
        self._prev_node = (busy, total)
        return NodeStats(
            time=now, cpu_util=util, cpu_count=count,
            mem_used=host.mem_total - host.mem_available, mem_total=host.mem_total,
            disk_used=disk[0], disk_total=disk[1], net_rx=net[0], net_tx=net[1],
        )

    async def _guarded(self, cid: str, call: Awaitable[_T]) -> _T | None:
        """The call's result; None if the container is gone, not running, or Docker fails."""
        try:
            return await call
        except ContainerNotFound:
            return None
        except DockerError as exc:
            log.warning("stats of container %s skipped: %s", cid[:12], exc)
            return None

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
