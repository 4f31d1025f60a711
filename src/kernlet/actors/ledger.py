"""The node's resource ledger: which kernel holds which slots, cores, devices and host ports.

Pure bookkeeping over the :class:`~kernlet.drivers.resources.Allocator` (slots, cores,
devices) and the :class:`~kernlet.drivers.ports.PortPool` (host ports): no actor, no I/O, no
threads; one owner (the agent actor) calls it. Every change is all or nothing: a kernel
either holds all of its slots and ports or none of them (the allocator knows every kernel
that holds anything, even an empty request), and the ledger remembers each kernel's ports
itself, so that ``release`` needs only the kernel's id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kernlet.drivers.ports import PortPool
from kernlet.drivers.resources import Allocation, Allocator, Amount, format_amount

__all__ = ["Ledger"]


class Ledger:
    """Slots and ports per kernel; see the module docstring."""

    def __init__(self, allocator: Allocator, ports: PortPool) -> None:
        self._slots = allocator
        self._ports = ports
        #: kernel id -> the host ports it holds (kernels that hold slots only: ())
        self._held_ports: dict[str, tuple[int, ...]] = {}

    def allocate(
        self, kernel_id: str, request: Mapping[str, Amount], n_ports: int
    ) -> tuple[Allocation, tuple[int, ...]]:
        """Every slot of ``request`` and ``n_ports`` host ports, or a KernletError
        (InsufficientResource, InvalidRequest, KernelAlreadyExists) and nothing held."""
        allocation = self._slots.allocate(kernel_id, request)
        try:
            ports = self._ports.acquire(n_ports) if n_ports else ()
        except BaseException:
            self._slots.release(kernel_id)
            raise
        self._held_ports[kernel_id] = ports
        return allocation, ports

    def check(self, request: Mapping[str, Amount]) -> None:
        """Refuse a request this node could never give (see ``Allocator.check``); holds
        nothing either way."""
        self._slots.check(request)

    def release(self, kernel_id: str) -> tuple[Allocation | None, tuple[int, ...]]:
        """Give back everything the kernel holds: what that was (None, (): nothing; a second
        release is a no-op)."""
        allocation = self._slots.release(kernel_id)
        ports = self._held_ports.pop(kernel_id, ())
        self._ports.release(ports)
        return allocation, ports

    def restore(
        self,
        kernel_id: str,
        slots: Mapping[str, str],
        cpuset: Sequence[int],
        devices: Mapping[str, Mapping[str, str]] | None,
        ports: Sequence[int],
    ) -> Allocation:
        """Hold again exactly what the log recorded for the kernel (after a restart), or
        nothing: InsufficientResource if another kernel holds part of it or it exceeds the
        node, InvalidRequest if the record is malformed, KernelAlreadyExists if this kernel
        holds resources already."""
        allocation = Allocation.from_event(slots, cpuset, devices)
        self._slots.restore(kernel_id, allocation)
        try:
            self._ports.restore(ports)
        except BaseException:
            self._slots.release(kernel_id)
            raise
        self._held_ports[kernel_id] = tuple(ports)
        return allocation

    def held(self, kernel_id: str) -> tuple[Allocation | None, tuple[int, ...]]:
        """What the kernel holds now (None, (): nothing)."""
        return self._slots.get(kernel_id), self._held_ports.get(kernel_id, ())

    @property
    def ports_held(self) -> frozenset[int]:
        return self._ports.held

    def advertised_slots(self) -> dict[str, tuple[str, str]]:
        """slot -> (slot type, capacity as a string): the heartbeat's resource slots."""
        return self._slots.advertised_slots()

    def slot_report(self) -> dict[str, dict[str, str]]:
        """slot -> type / capacity / used / free as strings (after reserved amounts)."""
        cap, used, free = self._slots.capacity(), self._slots.used(), self._slots.free()
        kinds = self._slots.advertised_slots()
        return {s: {"type": kinds[s][0], "capacity": format_amount(cap[s]),
                    "used": format_amount(used[s]), "free": format_amount(free[s])}
                for s in cap}
