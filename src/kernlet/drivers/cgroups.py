"""The one reader of containers' cgroup accounting and of the host's /proc figures.

Every read here blocks (small files, but files): nothing in this module may run on the loop.
:meth:`CgroupReader.read` reads one whole sample (the host and every container asked for) in
one call, so that a caller crosses threads once per sample, not once per file: the stats
driver awaits :meth:`CgroupReader.aread` (one ``asyncio.to_thread`` hop), the watcher calls
:meth:`CgroupReader.read` on its actor's own thread.

A container's directory is looked up in both layouts and under both Docker cgroup drivers'
names, ``docker/<id>`` (cgroupfs) and ``system.slice/docker-<id>.scope`` (systemd); the first
one whose memory file can be read is the container's, and where it was found is kept until a
read there fails (at 200 kernels a sample is 1,000 small files, so the lookup, pathlib and
text wrappers cost more than the reads: files are read with ``os.read`` and only the lines
wanted are parsed):

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
    text = _text(f"{proc}/meminfo")
    if text is None:
        return 0, 0
    kb = _kv(text.replace(":", " ").replace(" kB", ""))
    return kb.get("MemTotal", 0) * 1024, kb.get("MemAvailable", kb.get("MemFree", 0)) * 1024


def _read(path: str) -> bytes | None:
    """The whole of a small file, or None when it cannot be read: the one place this module
    reads a file (os-level: pathlib and a text wrapper cost more than the read itself)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = [os.read(fd, 65536)]
        while len(chunks[-1]) == 65536:
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _text(path: str) -> str | None:
    data = _read(path)
    return data.decode("ascii", "replace") if data is not None else None


def _kv(text: str) -> dict[str, int]:
    """``name value`` lines (memory.stat, cpu.stat) as a map; other lines left out."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _field(data: bytes | None, key: bytes) -> int | None:
    """The value of the ``key value`` line of a flat-keyed file (memory.stat, cpu.stat);
    None when the file or the line is missing. Finds the one line, parses nothing else."""
    if data is None:
        return None
    if data.startswith(key + b" "):
        at = len(key) + 1
    else:
        line = data.find(b"\n" + key + b" ")
        if line < 0:
            return None
        at = line + len(key) + 2
    end = data.find(b"\n", at)
    try:
        return int(data[at:end] if end >= 0 else data[at:])
    except ValueError:
        return None


def _first_int(data: bytes | None) -> int | None:
    try:
        return int(data.split(None, 1)[0]) if data is not None else None
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


def _parsed(path: str, parse: Callable[[str], _T]) -> _T | None:
    text = _text(path)
    try:
        return parse(text) if text is not None else None
    except (ValueError, IndexError, KeyError):
        return None


@dataclass(frozen=True, slots=True)
class _Files:
    """Where one container's accounting files were found: looked up once, then reused."""

    source: str
    memory: str  #: memory.usage_in_bytes (v1) or memory.current (v2)
    stat: str  #: memory.stat
    inactive: bytes  #: memory.stat's key for the inactive file cache
    cpu: str  #: cpuacct.usage (v1, ns) or cpu.stat (v2, usage_usec)
    io: str
    io_parse: Callable[[str], tuple[int, int]]

    def counters(self, memory: int) -> ContainerCounters:
        inactive = _field(_read(self.stat), self.inactive) or 0
        cpu = _read(self.cpu)
        if self.source == "cgroup-v1":
            cpu_ns = _first_int(cpu)
        else:
            usec = _field(cpu, b"usage_usec")
            cpu_ns = usec * 1000 if usec is not None else None
        return ContainerCounters(source=self.source, memory=max(0, memory - inactive),
                                 cpu_ns=cpu_ns, io=_parsed(self.io, self.io_parse))


class CgroupReader:
    """Reads containers' cgroup files and the host's /proc files (blocking: off the loop).

    Where a container's files are is looked up once and kept until one of its reads fails
    (the container is gone) or a whole :meth:`read` no longer asks for it. Not thread-safe:
    one reader per sampling thread of work (each caller owns its own).
    """

    def __init__(
        self, cgroup_root: Path = Path("/sys/fs/cgroup"), proc_root: Path = Path("/proc")
    ) -> None:
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root
        self._files: dict[str, _Files] = {}

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
        for gone in self._files.keys() - containers.keys():
            del self._files[gone]
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
        net = _parsed(f"{self.proc_root}/{pid}/net/dev", net_dev)
        return counters if net is None else replace(counters, net=net)

    def _cgroup(self, container_id: str) -> ContainerCounters | None:
        files = self._files.get(container_id)
        if files is not None:
            memory = _first_int(_read(files.memory))
            if memory is not None:
                return files.counters(memory)
            del self._files[container_id]  # gone (or moved): look again
        for files in self._candidates(container_id):
            memory = _first_int(_read(files.memory))
            if memory is not None:
                self._files[container_id] = files
                return files.counters(memory)
        return None

    def _candidates(self, container_id: str) -> list[_Files]:
        """Both layouts under both Docker cgroup drivers' names, v1 first."""
        names = (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope")
        root = str(self.cgroup_root)
        v1 = [_Files("cgroup-v1", f"{root}/memory/{n}/memory.usage_in_bytes",
                     f"{root}/memory/{n}/memory.stat", b"total_inactive_file",
                     f"{root}/cpuacct/{n}/cpuacct.usage",
                     f"{root}/blkio/{n}/blkio.throttle.io_service_bytes_recursive", _blkio_v1)
              for n in names]
        v2 = [_Files("cgroup-v2", f"{root}/{n}/memory.current", f"{root}/{n}/memory.stat",
                     b"inactive_file", f"{root}/{n}/cpu.stat", f"{root}/{n}/io.stat", _io_v2)
              for n in names]
        return v1 + v2

    def host(self, disk: Path | None = None) -> HostCounters:
        """The host's cpu ticks, memory and net counters (and ``disk``'s usage if given)."""
        proc = str(self.proc_root)
        total, available = read_meminfo(self.proc_root)
        cpu = _parsed(f"{proc}/stat", proc_stat_cpu)
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
            net=_parsed(f"{proc}/net/dev", lambda t: net_dev(t, HOST_NET_SKIP)),
            disk=used_total,
        )
