"""The host port pool for kernels' service ports.

A fixed, inclusive range (default 30000-31000). Ports are handed out all-or-nothing, in
round-robin order (a port just released is the last to be reused, so a lingering socket
or a container still going away does not collide), skipping ports that another process has
bound. Pure bookkeeping plus one injectable check; not thread-safe: one owner calls it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable

from kernlet.errors import InsufficientResource

__all__ = ["PortPool", "port_in_use"]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` is bound by someone (a quick bind test; no SO_REUSEADDR, so a
    port in TIME_WAIT counts as in use too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


class PortPool:
    """Ports ``first..last`` (inclusive); see the module docstring."""

    def __init__(
        self,
        first: int = 30000,
        last: int = 31000,
        *,
        in_use: Callable[[int], bool] = port_in_use,
    ) -> None:
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"bad port range {first}-{last}")
        self.first, self.last = first, last
        self._in_use = in_use
        self._held: set[int] = set()
        self._next = first

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    @property
    def held(self) -> frozenset[int]:
        return frozenset(self._held)

    def free_count(self) -> int:
        """Ports not held by kernels (some may still be bound by other processes)."""
        return self.size - len(self._held)

    def acquire(self, n: int) -> tuple[int, ...]:
        """``n`` distinct ports, or InsufficientResource and nothing held."""
        if n < 0:
            raise ValueError(f"cannot acquire {n} ports")
        got: list[int] = []
        port = self._next
        for _ in range(self.size):
            if len(got) == n:
                break
            if port not in self._held and not self._in_use(port):
                got.append(port)
            port = port + 1 if port < self.last else self.first
        if len(got) < n:
            raise InsufficientResource(
                f"no free port in {self.first}-{self.last} "
                f"(needed {n}, {len(got)} free)"
            )
        self._held.update(got)
        if got:
            self._next = port
        return tuple(got)

    def release(self, ports: Iterable[int]) -> None:
        """Give ports back; ports not held (or outside the range) are ignored."""
        self._held.difference_update(ports)

    def restore(self, ports: Iterable[int]) -> None:
        """Hold these ports again after a restart, all or none: InsufficientResource if one
        is already held or repeated. Ports outside the range (it was changed since) are not
        tracked: this pool never hands them out anyway. They are not bind-tested: the
        kernel's own container is expected to hold them."""
        wanted = [p for p in ports if self.first <= p <= self.last]
        taken = sorted({p for p in wanted if p in self._held or wanted.count(p) > 1})
        if taken:
            raise InsufficientResource(f"ports {taken} are already held")
        self._held.update(wanted)
