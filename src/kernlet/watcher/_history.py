"""The last minutes of usage, for the dashboard's charts: one ring of samples for the node and
one per kernel, fed by every usage sample (about every 2 s), read by ``GET /usage/history``.

A kernel's ring is dropped once the kernel is absent from a sample for as long as the window
(it has ended); memory is bounded by ``window / interval`` points per live kernel.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from kernlet.watcher._usage import Usage

__all__ = ["WINDOW_SECONDS", "UsageHistory"]

#: how far back the charts reach (seconds)
WINDOW_SECONDS = 600.0


class UsageHistory:
    """Owned by the loop (not thread-safe)."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        #: (time, host cpu busy share 0..1, host memory used bytes)
        self.node: deque[tuple[float, float, int]] = deque()
        #: kernel id -> (time, cores busy, memory bytes)
        self.kernels: dict[str, deque[tuple[float, float, int]]] = {}

    def add(self, usage: Usage) -> None:
        at = usage.at
        if usage.host is not None:
            h = usage.host
            self.node.append((at, round(h.cpu_ratio, 4), h.mem_total - h.mem_available))
        for kid, u in usage.kernels.items():
            self.kernels.setdefault(kid, deque()).append(
                (at, round(u.cpu_ratio, 4), u.memory_bytes))
        horizon = at - self.window
        for ring in (self.node, *self.kernels.values()):
            while ring and ring[0][0] < horizon:
                ring.popleft()
        for kid in [k for k, ring in self.kernels.items() if not ring]:
            del self.kernels[kid]

    def to_dict(self, kernel_id: str | None = None) -> dict[str, Any]:
        """``{"window", "node": [[t, cpu_ratio, mem_used]...], "kernels": {id: [[t,
        cpu_cores, mem_bytes]...]}}``; with ``kernel_id``, only that kernel's ring."""
        kernels = self.kernels if kernel_id is None else (
            {kernel_id: self.kernels[kernel_id]} if kernel_id in self.kernels else {})
        return {
            "window": self.window,
            "node": [list(p) for p in self.node],
            "kernels": {kid: [list(p) for p in ring] for kid, ring in kernels.items()},
        }
