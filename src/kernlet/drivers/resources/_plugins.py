"""Resource plugins: what the node has (cpu, mem; cuda in ``_cuda``) and reserved amounts.

Detection reads a few small files under /proc and /sys once, at start. ``gather_hwinfo``
turns the plugins into plain dicts for the gather_hwinfo command and the heartbeat.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from kernlet.drivers.resources._alloc import SlotPool, device_key
from kernlet.drivers.resources._slots import CPU, MEM, Amount, format_amount, parse_amount

__all__ = [
    "PluginInfo",
    "apply_reserved",
    "cgroup_memory_limit",
    "detect_cpu",
    "detect_mem",
    "gather_hwinfo",
]

#: cgroup v1 reports "no limit" as a huge number near 2**63
_UNLIMITED = 2**62


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One plugin's detected devices (before reserved amounts) and facts about them."""

    #: "cpu", "mem" or "cuda"
    key: str
    pools: tuple[SlotPool, ...]
    #: plain data for gather_hwinfo (model, limits, device names...)
    info: dict[str, Any] = field(default_factory=dict)


def detect_cpu(cores: Iterable[int] | None = None) -> PluginInfo:
    """The cores this process may run on (``os.sched_getaffinity``), one device each."""
    ids = sorted(os.sched_getaffinity(0) if cores is None else cores)
    pool = SlotPool(CPU, {str(c): Decimal(1) for c in ids})
    return PluginInfo("cpu", (pool,), {"cores": ids, "count": len(ids)})


def _meminfo_total(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"{path}: no MemTotal")


def cgroup_memory_limit(self_cgroup: Path, cgroup_root: Path) -> int | None:
    """The lowest memory limit on this process's cgroup and its ancestors (v1 or v2 unified
    hierarchy), or None when there is none or it cannot be read."""
    limits: list[int] = []
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base, name = cgroup_root / "memory", "memory.limit_in_bytes"
        elif controllers == "" and (cgroup_root / "cgroup.controllers").exists():
            base, name = cgroup_root, "memory.max"
        else:
            continue
        rel = Path(path.lstrip("/"))
        for parent in (rel, *rel.parents):
            try:
                text = (base / parent / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < _UNLIMITED:
                limits.append(int(text))
    return min(limits) if limits else None


def detect_mem(
    proc_root: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")
) -> PluginInfo:
    """Total memory (/proc/meminfo), or this process's cgroup limit if that is lower."""
    total = _meminfo_total(proc_root / "meminfo")
    limit = cgroup_memory_limit(proc_root / "self" / "cgroup", cgroup_root)
    capacity = min(total, limit) if limit is not None else total
    pool = SlotPool(MEM, {"0": Decimal(capacity)})
    return PluginInfo("mem", (pool,), {"total": total, "cgroup_limit": limit,
                                       "capacity": capacity})


def apply_reserved(
    plugins: Iterable[PluginInfo], reserved: Mapping[str, Amount]
) -> list[SlotPool]:
    """The pools left for kernels: reserved cpu takes whole cores from the lowest ids;
    reserved mem comes off the memory device. ValueError if nothing would be left."""
    pools = [p for plugin in plugins for p in plugin.pools]
    out: list[SlotPool] = []
    names = {p.spec.name for p in pools}
    for slot in reserved:
        if slot not in (CPU.name, MEM.name):
            raise ValueError(f"reserved amounts are for cpu and mem, not {slot!r}")
        if slot not in names:
            raise ValueError(f"reserved {slot}: this node has no {slot}")
    for pool in pools:
        amount = parse_amount(pool.spec.name, reserved.get(pool.spec.name, 0))
        if amount == 0:
            out.append(pool)
        elif pool.spec.name == CPU.name:
            if amount != int(amount) or amount >= len(pool.devices):
                raise ValueError(f"reserved cpu {format_amount(amount)}: must be whole cores, "
                                 f"fewer than the {len(pool.devices)} detected")
            ids = sorted(pool.devices, key=device_key)[int(amount):]
            out.append(SlotPool(pool.spec, {d: pool.devices[d] for d in ids}))
        else:
            (dev, cap), = pool.devices.items()
            if amount >= cap:
                raise ValueError(f"reserved mem {format_amount(amount)} >= capacity {cap}")
            out.append(SlotPool(pool.spec, {dev: cap - amount}))
    return out


def gather_hwinfo(plugins: Iterable[PluginInfo]) -> dict[str, dict[str, Any]]:
    """plugin -> plain dict: detected slots (type, map, capacity, devices) and its facts."""
    out: dict[str, dict[str, Any]] = {}
    for plugin in plugins:
        slots = {
            p.spec.name: {
                "type": p.spec.type.value,
                "map": p.spec.map.value,
                "quantum": format_amount(p.spec.quantum),
                "capacity": format_amount(sum(p.devices.values(), Decimal(0))),
                "devices": {d: format_amount(c) for d, c in p.devices.items()},
            }
            for p in plugin.pools
        }
        out[plugin.key] = {"slots": slots, **plugin.info}
    return out
