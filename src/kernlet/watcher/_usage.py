"""Per-kernel CPU and memory from the containers' cgroup files, and the host's from /proc.

Cheap by design: a few small files per kernel, read by the one cgroup reader
(:class:`kernlet.drivers.cgroups.CgroupReader`, both cgroup layouts) in one call per sample, on
the watcher actor's thread every few seconds, never on the loop. Memory is usage minus inactive
file cache, the figure ``docker stats`` shows; a container whose CPU file is unreadable counts
0 CPU seconds, and one whose directory is not found (gone, or another layout) simply has no
sample.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kernlet.drivers.cgroups import CgroupReader, HostCounters, read_meminfo

__all__ = ["HostUsage", "KernelUsage", "Usage", "UsageTracker", "read_meminfo"]


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
        self._reader = CgroupReader(cgroup_root, proc_root)
        self._clock = clock
        self._wall = wall
        self._cpu_count = os.cpu_count() or 1
        #: kernel id -> (monotonic time, cpu seconds) of the previous sample
        self._last: dict[str, tuple[float, float]] = {}
        self._last_host: tuple[int, int] | None = None

    def sample(self, containers: Mapping[str, str]) -> Usage:
        """Read every kernel's container (kernel id -> container id) and the host."""
        now = self._clock()
        reading = self._reader.read(dict.fromkeys(containers.values()))
        kernels: dict[str, KernelUsage] = {}
        for kernel_id, container_id in containers.items():
            raw = reading.containers.get(container_id)
            if raw is None:
                continue
            cpu_seconds = (raw.cpu_ns or 0) / 1e9
            ratio = 0.0
            prev = self._last.get(kernel_id)
            if prev is not None and now > prev[0] and cpu_seconds >= prev[1]:
                ratio = (cpu_seconds - prev[1]) / (now - prev[0])
            self._last[kernel_id] = (now, cpu_seconds)
            kernels[kernel_id] = KernelUsage(container_id, cpu_seconds, ratio, raw.memory)
        for gone in set(self._last) - set(kernels):
            del self._last[gone]
        return Usage(at=self._wall(), host=self._host(reading.host), kernels=kernels)

    def _host(self, host: HostCounters) -> HostUsage | None:
        ticks = host.cpu[:2] if host.cpu is not None else None
        if ticks is None and host.mem_total == 0:
            return None
        ratio = 0.0
        if ticks is not None and self._last_host is not None:
            busy = ticks[0] - self._last_host[0]
            span = ticks[1] - self._last_host[1]
            ratio = busy / span if span > 0 else 0.0
        self._last_host = ticks
        return HostUsage(
            self._cpu_count, min(max(ratio, 0.0), 1.0), host.mem_total, host.mem_available
        )
