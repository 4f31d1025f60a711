"""The allocator: all-or-nothing placement of a kernel's slots on the node's devices.

Pure logic, no I/O, not thread-safe: one owner (the agent actor) calls it. Amounts are held
as whole quanta per device (see ``_slots``), so sums never round and ``used + free ==
capacity`` holds exactly. An :class:`Allocation` is plain data that the kernel_creating event
stores; :meth:`Allocator.restore` rebuilds the same state from it after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kernlet.drivers.resources._slots import (
    CPU,
    KNOWN_SLOTS,
    AllocMap,
    Amount,
    SlotSpec,
    format_amount,
    parse_amount,
)
from kernlet.errors import InsufficientResource, InvalidRequest, KernelAlreadyExists

__all__ = ["Allocation", "Allocator", "SlotPool", "device_key"]


def device_key(device: str) -> tuple[int, int, str]:
    """Sort key for device ids: numeric ids in numeric order, then the others by name."""
    return (0, int(device), "") if device.isdigit() else (1, 0, device)


@dataclass(frozen=True, slots=True)
class SlotPool:
    """A slot's devices and the capacity of each (after reserved amounts)."""

    spec: SlotSpec
    #: device id -> capacity in slot units (discrete slots: exactly 1 per device)
    devices: dict[str, Decimal]


@dataclass(frozen=True, slots=True)
class Allocation:
    """What one kernel holds: plain data (``to_plain``) that survives a restart."""

    #: slot -> amount held (the request, normalised; zero amounts are left out)
    slots: dict[str, Decimal]
    #: slot -> device id -> amount on that device, in placement order. For cpu: the whole
    #: cores in ascending order, then the core holding the fractional remainder, if any.
    devices: dict[str, dict[str, Decimal]] = field(default_factory=dict)

    @property
    def cpuset(self) -> tuple[int, ...]:
        """Cores for CpusetCpus, in the order :meth:`from_event` needs to rebuild the map."""
        return tuple(int(d) for d in self.devices.get(CPU.name, {}))

    @property
    def nano_cpus(self) -> int:
        """The exact cpu amount for NanoCpus (0: no cpu slot held)."""
        return int(self.slots.get(CPU.name, Decimal(0)) * 10**9)

    @property
    def memory(self) -> int:
        return int(self.slots.get("mem", Decimal(0)))

    def plain_slots(self) -> dict[str, str]:
        return {k: format_amount(v) for k, v in self.slots.items()}

    def to_plain(self) -> dict[str, Any]:
        return {
            "slots": self.plain_slots(),
            "devices": {
                s: {d: format_amount(a) for d, a in m.items()} for s, m in self.devices.items()
            },
        }

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> Allocation:
        try:
            slots = {str(k): parse_amount(str(k), v) for k, v in data["slots"].items()}
            devices = {
                str(s): {str(d): parse_amount(str(s), a) for d, a in m.items()}
                for s, m in (data.get("devices") or {}).items()
            }
        except (KeyError, AttributeError, TypeError) as exc:
            raise InvalidRequest(f"malformed allocation: {data!r}") from exc
        return cls(slots, devices)

    @classmethod
    def from_event(
        cls,
        slots: Mapping[str, str],
        cpuset: Sequence[int],
        devices: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Allocation:
        """Rebuild from the kernel_creating event's fields. The cpu map follows from the
        cpuset's order; single-device slots (mem) need no map; others need ``devices``."""
        amounts = {k: parse_amount(k, v) for k, v in slots.items()}
        maps = {
            s: {d: parse_amount(s, a) for d, a in m.items()} for s, m in (devices or {}).items()
        }
        cpu = amounts.get(CPU.name, Decimal(0))
        if cpu and CPU.name not in maps:
            whole = int(cpu)
            rest = cpu - whole
            if len(cpuset) != whole + (1 if rest else 0):
                raise InvalidRequest(f"cpu {format_amount(cpu)} does not match cpuset {cpuset}")
            cores = {str(c): Decimal(1) for c in cpuset[:whole]}
            if rest:
                cores[str(cpuset[whole])] = rest
            if len(cores) != len(cpuset):
                raise InvalidRequest(f"cpuset {cpuset} repeats a core")
            maps[CPU.name] = cores
        return cls(amounts, maps)


class _Pool:
    """One slot's devices, what is used on each (in quanta), and the placement rules."""

    def __init__(self, pool: SlotPool) -> None:
        self.spec = pool.spec
        self.ids = sorted(pool.devices, key=device_key)
        self.cap = {d: self.spec.to_quanta(pool.devices[d]) for d in self.ids}
        self.used = dict.fromkeys(self.ids, 0)
        if self.spec.map is AllocMap.DISCRETE:
            bad = [d for d, c in self.cap.items() if c != self.spec.unit]
            if bad:
                raise ValueError(f"{self.spec.name}: devices {bad} are not exactly one unit")

    def free(self, device: str) -> int:
        return self.cap[device] - self.used[device]

    def place(self, n: int) -> dict[str, int] | None:
        """Where ``n`` quanta would go (None: they do not fit). Changes nothing."""
        if n == 0:
            return {}
        if self.spec.map is AllocMap.DISCRETE:
            return self._place_discrete(n)
        return self._place_fractional(n)

    def _place_discrete(self, n: int) -> dict[str, int] | None:
        whole, rest = divmod(n, self.spec.unit)
        fresh = [d for d in self.ids if self.used[d] == 0]
        shared: str | None = None
        if rest:
            # The remainder shares a partly used device (best fit), else takes a fresh one
            # from the top, so that whole requests keep the low ids together.
            partly = [d for d in self.ids if self.used[d] > 0 and self.free(d) >= rest]
            if partly:
                shared = min(partly, key=lambda d: (self.free(d), device_key(d)))
            elif fresh:
                shared = fresh[-1]
            else:
                return None
        wholes = [d for d in fresh if d != shared][:whole]
        if len(wholes) < whole:
            return None
        holding = dict.fromkeys(wholes, self.spec.unit)
        if shared is not None:
            holding[shared] = rest
        return holding

    def _place_fractional(self, n: int) -> dict[str, int] | None:
        fits = [d for d in self.ids if self.free(d) >= n]
        if fits:
            return {min(fits, key=lambda d: (self.free(d), device_key(d))): n}
        holding: dict[str, int] = {}
        for d in sorted(self.ids, key=lambda d: (-self.free(d), device_key(d))):
            take = min(self.free(d), n)
            if take > 0:
                holding[d] = take
                n -= take
            if n == 0:
                return holding
        return None

    def conflict(self, holding: Mapping[str, int]) -> str | None:
        """Why ``holding`` cannot be taken now (restore), or None."""
        for d, q in holding.items():
            if d not in self.cap:
                return f"no device {d}"
            if q <= 0 or q > self.free(d):
                return f"device {d} has {self.spec.from_quanta(self.free(d))} free"
        return None

    def take(self, holding: Mapping[str, int]) -> None:
        for d, q in holding.items():
            self.used[d] += q

    def give(self, holding: Mapping[str, int]) -> None:
        for d, q in holding.items():
            self.used[d] -= q


class Allocator:
    """All-or-nothing allocation of slots across plugins; see docs/resources.md."""

    def __init__(self, pools: Iterable[SlotPool]) -> None:
        self._pools = {p.spec.name: _Pool(p) for p in pools}
        self._held: dict[str, dict[str, dict[str, int]]] = {}

    def capacity(self) -> dict[str, Decimal]:
        return {s: p.spec.from_quanta(sum(p.cap.values())) for s, p in self._pools.items()}

    def used(self) -> dict[str, Decimal]:
        return {s: p.spec.from_quanta(sum(p.used.values())) for s, p in self._pools.items()}

    def free(self) -> dict[str, Decimal]:
        return {s: self.capacity()[s] - u for s, u in self.used().items()}

    def advertised_slots(self) -> dict[str, tuple[str, str]]:
        """slot -> (slot type, capacity as a string): the heartbeat's resource slots."""
        return {s: (p.spec.type.value, format_amount(c))
                for (s, p), c in zip(self._pools.items(), self.capacity().values(), strict=True)}

    def device_usage(self) -> dict[str, dict[str, Decimal]]:
        """slot -> device -> amount used: the whole per-device state."""
        return {s: {d: p.spec.from_quanta(q) for d, q in p.used.items()}
                for s, p in self._pools.items()}

    def allocations(self) -> dict[str, Allocation]:
        return {k: self._allocation(h) for k, h in self._held.items()}

    def get(self, kernel_id: str) -> Allocation | None:
        held = self._held.get(kernel_id)
        return None if held is None else self._allocation(held)

    def allocate(self, kernel_id: str, request: Mapping[str, Amount]) -> Allocation:
        """Place every slot of ``request`` or nothing. InsufficientResource names the slot."""
        if kernel_id in self._held:
            raise KernelAlreadyExists(f"kernel {kernel_id} already holds resources")
        wanted = self._quanta(request)
        placed: dict[str, dict[str, int]] = {}
        for slot, n in wanted.items():
            pool = self._pools[slot]
            holding = pool.place(n)
            if holding is None:
                raise InsufficientResource(self._shortage(pool, n))
            placed[slot] = holding
        for slot, holding in placed.items():
            self._pools[slot].take(holding)
        self._held[kernel_id] = placed
        return self._allocation(placed)

    def release(self, kernel_id: str) -> Allocation | None:
        """Give back what the kernel holds; a second release is a no-op (returns None)."""
        held = self._held.pop(kernel_id, None)
        if held is None:
            return None
        for slot, holding in held.items():
            self._pools[slot].give(holding)
        return self._allocation(held)

    def restore(self, kernel_id: str, allocation: Allocation) -> None:
        """Hold exactly ``allocation`` again (after a restart), or nothing if any part of it
        is held by another kernel, exceeds capacity or names an unknown device."""
        if kernel_id in self._held:
            raise KernelAlreadyExists(f"kernel {kernel_id} already holds resources")
        wanted = self._quanta(allocation.slots)
        placed: dict[str, dict[str, int]] = {}
        for slot, n in wanted.items():
            pool = self._pools[slot]
            amounts = allocation.devices.get(slot)
            if amounts is None:
                if len(pool.ids) != 1:
                    raise InvalidRequest(f"restore {kernel_id}: {slot} needs its device map")
                amounts = {pool.ids[0]: allocation.slots[slot]}
            holding = {d: pool.spec.to_quanta(a) for d, a in amounts.items()}
            if sum(holding.values()) != n:
                raise InvalidRequest(f"restore {kernel_id}: {slot} device map does not add up")
            why = pool.conflict(holding)
            if why is not None:
                raise InsufficientResource(f"restore {kernel_id}: {slot}: {why}")
            placed[slot] = holding
        for slot, holding in placed.items():
            self._pools[slot].take(holding)
        self._held[kernel_id] = placed

    def check(self, request: Mapping[str, Amount]) -> None:
        """Whether ``request`` could ever be placed on this node, whatever is held now:
        InvalidRequest (unknown slot, bad amount, not a multiple of the quantum: a fractional
        device count) or InsufficientResource (a slot this node does not have, or more than
        its whole capacity), each naming the slot. Changes nothing."""
        for slot, n in self._quanta(request).items():
            pool = self._pools[slot]
            if n > sum(pool.cap.values()):
                spec = pool.spec
                raise InsufficientResource(
                    f"{slot}: requested {format_amount(spec.from_quanta(n))}, this node has "
                    f"{format_amount(spec.from_quanta(sum(pool.cap.values())))} in all")

    def _quanta(self, request: Mapping[str, Amount]) -> dict[str, int]:
        wanted: dict[str, int] = {}
        for slot in sorted(request):
            amount = parse_amount(slot, request[slot])
            spec = KNOWN_SLOTS.get(slot)
            if spec is None:
                raise InvalidRequest(
                    f"unknown resource slot {slot!r}; known: {', '.join(sorted(KNOWN_SLOTS))}")
            n = spec.to_quanta(amount)  # a fractional device count is refused here
            if n == 0:
                continue
            if slot not in self._pools:
                raise InsufficientResource(
                    f"{slot}: requested {format_amount(amount)}, this node has none"
                )
            wanted[slot] = n
        return wanted

    def _shortage(self, pool: _Pool, n: int) -> str:
        spec = pool.spec
        cap = spec.from_quanta(sum(pool.cap.values()))
        free = cap - spec.from_quanta(sum(pool.used.values()))
        text = (
            f"{spec.name}: requested {format_amount(spec.from_quanta(n))}, "
            f"free {format_amount(free)} of {format_amount(cap)}"
        )
        if spec.from_quanta(n) <= free and spec.map is AllocMap.DISCRETE:
            text += " (not enough whole free devices: the free amount is split among devices)"
        return text

    def _allocation(self, held: Mapping[str, Mapping[str, int]]) -> Allocation:
        slots: dict[str, Decimal] = {}
        devices: dict[str, dict[str, Decimal]] = {}
        for slot, holding in held.items():
            spec = self._pools[slot].spec
            slots[slot] = spec.from_quanta(sum(holding.values()))
            devices[slot] = {d: spec.from_quanta(q) for d, q in holding.items()}
        return Allocation(slots, devices)
