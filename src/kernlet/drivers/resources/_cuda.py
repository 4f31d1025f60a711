"""CUDA devices through NVML (``pynvml`` from the nvidia-ml-py package), when both exist.

Kept small and isolated: :func:`detect_cuda` is the only code that touches NVML. Without the
package, without the driver library or without a GPU it returns None and logs at debug
level; it never raises. NVML calls block (device enumeration can take a few hundred ms), so
call it at start, off the event loop.
"""

from __future__ import annotations

import importlib
import logging
from decimal import Decimal
from typing import Any

from kernlet.drivers.resources._alloc import SlotPool
from kernlet.drivers.resources._plugins import PluginInfo
from kernlet.drivers.resources._slots import CUDA_DEVICE, CUDA_SHARES

__all__ = ["detect_cuda"]

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _load() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def _devices(nvml: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index in range(int(nvml.nvmlDeviceGetCount())):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        out.append({
            "id": str(index),
            "name": _text(nvml.nvmlDeviceGetName(handle)),
            "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
            "memory": int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
            "compute_capability": f"{int(major)}.{int(minor)}",
            "minor": _minor_number(nvml, handle, index),
        })
    return out


def _minor_number(nvml: Any, handle: Any, index: int) -> int:
    """The device's /dev/nvidia<minor> number (not always its NVML index); the index when
    this NVML cannot say."""
    get = getattr(nvml, "nvmlDeviceGetMinorNumber", None)
    if get is None:
        return index
    try:
        return int(get(handle))
    except (nvml.NVMLError, OSError):
        return index


def detect_cuda(mode: str = "device", nvml: Any = None) -> PluginInfo | None:
    """The node's GPUs as a plugin: slot ``cuda.device`` (mode "device": whole GPUs) or
    ``cuda.shares`` (mode "shares": one share per GPU, in quanta of 0.1). ``nvml`` stands
    in for the pynvml module in tests. None when there is no usable GPU."""
    if mode not in ("device", "shares"):
        raise ValueError(f"cuda mode must be 'device' or 'shares', not {mode!r}")
    lib = nvml if nvml is not None else _load()
    if lib is None:
        log.debug("cuda: pynvml is not installed")
        return None
    try:
        lib.nvmlInit()
    except (lib.NVMLError, OSError) as exc:
        log.debug("cuda: NVML unavailable: %s", exc)
        return None
    try:
        devices = _devices(lib)
        driver = _text(lib.nvmlSystemGetDriverVersion())
    except (lib.NVMLError, OSError) as exc:
        log.warning("cuda: NVML failed while listing devices: %s", exc)
        return None
    finally:
        try:
            lib.nvmlShutdown()
        except (lib.NVMLError, OSError):
            pass
    if not devices:
        return None
    spec = CUDA_SHARES if mode == "shares" else CUDA_DEVICE
    pool = SlotPool(spec, {d["id"]: Decimal(1) for d in devices})
    return PluginInfo("cuda", (pool,), {"driver": driver, "mode": mode, "devices": devices})
