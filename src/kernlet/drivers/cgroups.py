"""The one reader of containers' cgroup accounting and of the host's /proc figures.

Every read here blocks (small files, but files): nothing in this module may run on the loop.
:meth:`CgroupReader.read` reads one whole sample (the host and every container asked for) in
one call, so that a caller crosses threads once per sample, not once per file: the stats
driver awaits :meth:`CgroupReader.aread` (one ``asyncio.to_thread`` hop), the watcher calls
:meth:`CgroupReader.read` on its actor's own thread.

A container's directory is looked up in both layouts and under both Docker cgroup drivers'
names, ``docker/<id>`` (cgroupfs) and ``system.slice/docker-<id>.scope`` (systemd); the first
one whose memory file can be read is the container's:

- v1, one directory per controller, ``<root>/<controller>/<name>/``: memory from
  ``memory/…/memory.usage_in_bytes`` - ``total_inactive_file`` of ``memory.stat``, CPU from
  ``cpuacct/…/cpuacct.usage`` (ns), block I/O from
  ``blkio/…/blkio.throttle.io_service_bytes_recursive`` (Read, Write);
- v2, one directory, ``<root>/<name>/``: ``memory.current`` - ``inactive_file`` of
  ``memory.stat``, ``usage_usec`` of ``cpu.stat``, ``rbytes``/``wbytes`` of ``io.stat``.

Memory is usage minus inactive file cache, the figure ``docker stats`` shows. A figure whose
file cannot be read or parsed is ``None`` (each caller decides what a missing figure means); a
container with no readable memory file is not found at all. The container's network counters
come from ``/proc/<pid>/net/dev`` of a process inside it (loopback left out); the host's from
``/proc/stat``, ``/proc/meminfo`` and ``/proc/net/dev``. Both roots are injectable for tests.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

__all__ = [
    "HOST_NET_SKIP",
    "CgroupReader",
    "ContainerCounters",
    "HostCounters",
    "Reading",
    "net_dev",
    "proc_stat_cpu",
    "read_meminfo",
]

#: interfaces left out of the host's net counters: loopback, and the bridges and veth pairs
#: that carry containers' traffic a second time
HOST_NET_SKIP = ("lo", "veth", "docker", "br-")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ContainerCounters:
    """One container's cumulative counters, as read."""

    #: "cgroup-v1" or "cgroup-v2": the layout its directory was found in
    source: str
    #: bytes in use, inactive file cache excluded
    memory: int
    #: CPU time used since the container started, in nanoseconds; None when unreadable
    cpu_ns: int | None = None
    #: (read, written) bytes on block devices; None when unreadable
    io: tuple[int, int] | None = None
    #: (received, sent) bytes on its interfaces, loopback left out; None when no pid was given
    #: or its net/dev is unreadable (the process is gone)
    net: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class HostCounters:
    """The host's figures, as read; None (or 0 for memory) where a file is unreadable."""

    #: (busy jiffies, total jiffies, cpu lines) of all cores from /proc/stat
    cpu: tuple[int, int, int] | None = None
    mem_total: int = 0  #: bytes
    mem_available: int = 0  #: bytes: MemAvailable, MemFree on kernels without it
    #: (received, sent) bytes since boot on the physical interfaces (:data:`HOST_NET_SKIP`)
    net: tuple[int, int] | None = None
    #: (used, total) bytes on the file system of the path asked for; None when not asked
    disk: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample: the host and every container asked for that was found."""

    host: HostCounters = field(default_factory=HostCounters)
    #: container id -> counters
    containers: Mapping[str, ContainerCounters] = field(default_factory=dict)


def proc_stat_cpu(text: str) -> tuple[int, int, int]:
    """(busy jiffies, total jiffies, cpu count) from /proc/stat."""
    busy = total = count = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:9]]  # user nice system idle iowait irq ...
            total = sum(v)
            busy = total - v[3] - (v[4] if len(v) > 4 else 0)  # idle, iowait
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


def read_meminfo(proc: Path) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes from ``<proc>/meminfo``; zeros when unreadable."""
    text = _text(proc / "meminfo")
    if text is None:
        return 0, 0
    kb = _kv(text.replace(":", " ").replace(" kB", ""))
    return kb.get("MemTotal", 0) * 1024, kb.get("MemAvailable", kb.get("MemFree", 0)) * 1024


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _kv(text: str) -> dict[str, int]:
    """``name value`` lines (memory.stat, cpu.stat) as a map; other lines left out."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _first_int(path: Path) -> int | None:
    text = _text(path)
    try:
        return int(text.split()[0]) if text is not None else None
    except (ValueError, IndexError):
        return None


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


def _parsed(path: Path, parse: Callable[[str], _T]) -> _T | None:
    text = _text(path)
    try:
        return parse(text) if text is not None else None
    except (ValueError, IndexError, KeyError):
        return None


class CgroupReader:
    """Reads containers' cgroup files and the host's /proc files (blocking: off the loop)."""

    def __init__(
        self, cgroup_root: Path = Path("/sys/fs/cgroup"), proc_root: Path = Path("/proc")
    ) -> None:
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root

    def read(self, containers: Mapping[str, int | None], disk: Path | None = None) -> Reading:
        """The host and each container (id -> a pid inside it, for its net counters, or None).

        Containers whose directory is not found are left out; ``disk`` adds that file system's
        usage to the host's figures.
        """
        found: dict[str, ContainerCounters] = {}
        for cid, pid in containers.items():
            counters = self.container(cid, pid)
            if counters is not None:
                found[cid] = counters
        return Reading(self.host(disk), found)

    async def aread(
        self, containers: Mapping[str, int | None], disk: Path | None = None
    ) -> Reading:
        """:meth:`read` on a worker thread: one hop off the loop for the whole sample."""
        return await asyncio.to_thread(self.read, dict(containers), disk)

    def container(self, container_id: str, pid: int | None = None) -> ContainerCounters | None:
        """One container's counters; None when no directory of it is found.

        ``pid``, a process inside the container, gives its net counters.
        """
        counters = self._cgroup(container_id)
        if counters is None or pid is None:
            return counters
        return replace(counters, net=_parsed(self.proc_root / str(pid) / "net/dev", net_dev))

    def _cgroup(self, container_id: str) -> ContainerCounters | None:
        names = (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope")
        root = self.cgroup_root
        for name in names:  # v1: one directory per controller
            mem = root / "memory" / name
            usage = _first_int(mem / "memory.usage_in_bytes")
            if usage is not None:
                inactive = _parsed(mem / "memory.stat", _kv) or {}
                blkio = root / "blkio" / name / "blkio.throttle.io_service_bytes_recursive"
                return ContainerCounters(
                    source="cgroup-v1",
                    memory=max(0, usage - inactive.get("total_inactive_file", 0)),
                    cpu_ns=_first_int(root / "cpuacct" / name / "cpuacct.usage"),
                    io=_parsed(blkio, _blkio_v1),
                )
        for name in names:  # v2: one directory for all controllers
            d = root / name
            current = _first_int(d / "memory.current")
            if current is not None:
                inactive = _parsed(d / "memory.stat", _kv) or {}
                usec = (_parsed(d / "cpu.stat", _kv) or {}).get("usage_usec")
                return ContainerCounters(
                    source="cgroup-v2",
                    memory=max(0, current - inactive.get("inactive_file", 0)),
                    cpu_ns=usec * 1000 if usec is not None else None,
                    io=_parsed(d / "io.stat", _io_v2),
                )
        return None

    def host(self, disk: Path | None = None) -> HostCounters:
        """The host's cpu ticks, memory and net counters (and ``disk``'s usage if given)."""
        total, available = read_meminfo(self.proc_root)
        cpu = _parsed(self.proc_root / "stat", proc_stat_cpu)
        used_total = None
        if disk is not None:
            try:
                fs = os.statvfs(disk)
                used_total = ((fs.f_blocks - fs.f_bfree) * fs.f_frsize, fs.f_blocks * fs.f_frsize)
            except OSError:
                pass
        return HostCounters(
            cpu=cpu if cpu is not None and cpu[1] > 0 else None,
            mem_total=total,
            mem_available=available,
            net=_parsed(self.proc_root / "net/dev", lambda t: net_dev(t, HOST_NET_SKIP)),
            disk=used_total,
        )
