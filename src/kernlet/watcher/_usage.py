"""Per-kernel CPU and memory from the containers' cgroup files, and the host's from /proc.

Cheap by design: two or three small files per kernel, read on the watcher actor's thread every
few seconds, never on the loop. Both cgroup layouts are read:

- v1 (Docker's cgroupfs driver): ``<root>/memory/docker/<id>/memory.usage_in_bytes`` and
  ``memory.stat``, ``<root>/cpuacct/docker/<id>/cpuacct.usage`` (nanoseconds);
- v2: ``<root>/system.slice/docker-<id>.scope/`` or ``<root>/docker/<id>/`` with
  ``memory.current``, ``memory.stat`` and ``cpu.stat`` (``usage_usec``).

Memory is usage minus inactive file cache, the figure ``docker stats`` shows. A container whose
files are missing (gone, or another layout) simply has no sample.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["HostUsage", "KernelUsage", "Usage", "UsageTracker", "read_container", "read_meminfo"]


@dataclass(frozen=True, slots=True)
class RawUsage:
    """Cumulative counters of one container, as read."""

    #: CPU time used since the container started
    cpu_seconds: float
    #: memory in use, inactive file cache excluded
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class KernelUsage:
    """One kernel's usage at a sample."""

    container_id: str
    #: CPU time used since the container started
    cpu_seconds: float
    #: cores kept busy on average since the previous sample (1.0 = one full core)
    cpu_ratio: float
    memory_bytes: int

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "container_id": self.container_id,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "cpu_ratio": round(self.cpu_ratio, 4),
            "memory_bytes": self.memory_bytes,
        }


@dataclass(frozen=True, slots=True)
class HostUsage:
    """The machine's usage at a sample."""

    cpu_count: int
    #: share of all cores busy since the previous sample, 0..1
    cpu_ratio: float
    mem_total: int
    mem_available: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "cpu_count": self.cpu_count,
            "cpu_ratio": round(self.cpu_ratio, 4),
            "mem_total": self.mem_total,
            "mem_available": self.mem_available,
        }


@dataclass(frozen=True, slots=True)
class Usage:
    """One sample of the host and of every live kernel that could be read."""

    #: wall-clock time of the sample
    at: float = 0.0
    host: HostUsage | None = None
    #: kernel id -> usage
    kernels: Mapping[str, KernelUsage] = field(default_factory=dict)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def read_container(root: Path, container_id: str) -> RawUsage | None:
    """The container's cumulative counters from cgroup v1 or v2 files; None when not found."""
    mem_dir = root / "memory" / "docker" / container_id
    usage = _read_int(mem_dir / "memory.usage_in_bytes")
    if usage is not None:
        cpu_ns = _read_int(root / "cpuacct" / "docker" / container_id / "cpuacct.usage") or 0
        inactive = _stat_value(mem_dir / "memory.stat", "total_inactive_file")
        return RawUsage(cpu_ns / 1e9, max(0, usage - inactive))
    scope = root / "system.slice" / f"docker-{container_id}.scope"
    for v2 in (scope, root / "docker" / container_id):
        current = _read_int(v2 / "memory.current")
        if current is not None:
            cpu_us = _stat_value(v2 / "cpu.stat", "usage_usec")
            inactive = _stat_value(v2 / "memory.stat", "inactive_file")
            return RawUsage(cpu_us / 1e6, max(0, current - inactive))
    return None


def read_meminfo(proc: Path) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes from ``<proc>/meminfo``; zeros when unreadable."""
    total = available = 0
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == "MemTotal":
                total = int(rest.split()[0]) * 1024
            elif name == "MemAvailable":
                available = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return total, available


def _read_cpu_ticks(proc: Path) -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores from ``<proc>/stat``."""
    try:
        first = (proc / "stat").read_text().splitlines()[0].split()
        ticks = [int(x) for x in first[1:]]
    except (OSError, ValueError, IndexError):
        return None
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return total - idle, total


class UsageTracker:
    """Turns cumulative counters into rates between two samples.

    Owned by one thread (the watcher actor's); not thread-safe. The clock is injected for tests.
    """

    def __init__(
        self,
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        proc_root: Path = Path("/proc"),
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._cgroup = cgroup_root
        self._proc = proc_root
        self._clock = clock
        self._wall = wall
        self._cpu_count = os.cpu_count() or 1
        #: kernel id -> (monotonic time, cpu seconds) of the previous sample
        self._last: dict[str, tuple[float, float]] = {}
        self._last_host: tuple[int, int] | None = None

    def sample(self, containers: Mapping[str, str]) -> Usage:
        """Read every kernel's container (kernel id -> container id) and the host."""
        now = self._clock()
        kernels: dict[str, KernelUsage] = {}
        for kernel_id, container_id in containers.items():
            raw = read_container(self._cgroup, container_id)
            if raw is None:
                continue
            ratio = 0.0
            prev = self._last.get(kernel_id)
            if prev is not None and now > prev[0] and raw.cpu_seconds >= prev[1]:
                ratio = (raw.cpu_seconds - prev[1]) / (now - prev[0])
            self._last[kernel_id] = (now, raw.cpu_seconds)
            kernels[kernel_id] = KernelUsage(container_id, raw.cpu_seconds, ratio, raw.memory_bytes)
        for gone in set(self._last) - set(kernels):
            del self._last[gone]
        return Usage(at=self._wall(), host=self._host(), kernels=kernels)

    def _host(self) -> HostUsage | None:
        total, available = read_meminfo(self._proc)
        ticks = _read_cpu_ticks(self._proc)
        if ticks is None and total == 0:
            return None
        ratio = 0.0
        if ticks is not None and self._last_host is not None:
            busy = ticks[0] - self._last_host[0]
            span = ticks[1] - self._last_host[1]
            ratio = busy / span if span > 0 else 0.0
        self._last_host = ticks
        return HostUsage(self._cpu_count, min(max(ratio, 0.0), 1.0), total, available)
