"""Node resources: slot types, plugins that detect capacity, and the all-or-nothing allocator.

::

    detect_plugins() ──► [PluginInfo cpu, mem, cuda?] ──► gather_hwinfo() (plain dicts)
                              │
                              ▼
      cuda_for_containers(docker runtimes) ──► only GPUs containers can be given, CudaAccess
                              │
                              ▼ apply_reserved(reserved)
                         [SlotPool ...] ──► Allocator.allocate / release / restore
                                                   │
                                                   ▼
                                         Allocation (plain data for kernel_creating)

See docs/resources.md for the slots, the allocation maps and the fractional-cpu rule.
"""

from __future__ import annotations

from kernlet.drivers.resources._alloc import Allocation, Allocator, SlotPool, device_key
from kernlet.drivers.resources._cuda import detect_cuda
from kernlet.drivers.resources._cuda_access import (
    CUDA_ACCESS_MODES,
    CudaAccess,
    CudaParts,
    cuda_device_ids,
    cuda_for_containers,
    cuda_parts,
    probe_cuda_access,
)
from kernlet.drivers.resources._plugins import (
    PluginInfo,
    apply_reserved,
    cgroup_memory_limit,
    detect_cpu,
    detect_mem,
    gather_hwinfo,
)
from kernlet.drivers.resources._slots import (
    CPU,
    CUDA_DEVICE,
    CUDA_SHARES,
    KNOWN_SLOTS,
    MEM,
    AllocMap,
    Amount,
    SlotSpec,
    SlotType,
    format_amount,
    parse_amount,
)

__all__ = [
    "CPU",
    "CUDA_ACCESS_MODES",
    "CUDA_DEVICE",
    "CUDA_SHARES",
    "KNOWN_SLOTS",
    "MEM",
    "AllocMap",
    "Allocation",
    "Allocator",
    "Amount",
    "CudaAccess",
    "CudaParts",
    "PluginInfo",
    "SlotPool",
    "SlotSpec",
    "SlotType",
    "apply_reserved",
    "cgroup_memory_limit",
    "cuda_device_ids",
    "cuda_for_containers",
    "cuda_parts",
    "detect_cpu",
    "detect_cuda",
    "detect_mem",
    "detect_plugins",
    "device_key",
    "format_amount",
    "gather_hwinfo",
    "parse_amount",
    "probe_cuda_access",
]


def detect_plugins(cuda: str = "auto", cuda_mode: str = "device") -> list[PluginInfo]:
    """cpu and mem always; cuda when ``cuda`` is "auto" and NVML finds a GPU ("off": never).

    Blocking (file reads, NVML): call at start, or through ``asyncio.to_thread``.
    """
    plugins = [detect_cpu(), detect_mem()]
    if cuda not in ("auto", "off"):
        raise ValueError(f"resource cuda must be 'auto' or 'off', not {cuda!r}")
    if cuda == "auto":
        gpu = detect_cuda(cuda_mode)
        if gpu is not None:
            plugins.append(gpu)
    return plugins
