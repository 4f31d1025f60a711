"""A stand-in for the pynvml module (no GPU on the dev box or in CI): ``detect_cuda`` takes it
by injection (``nvml=``). Only the calls kernlet makes, with the shapes pynvml returns."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

GiB = 1024**3


class NVMLError(Exception):
    pass


def fake_nvml(count: int, fail_init: bool = False,
              minors: Sequence[int] | None = None) -> Any:
    """``count`` H200s; ``minors``: their /dev/nvidia<minor> numbers (default: the index;
    None leaves nvmlDeviceGetMinorNumber out, as an old NVML would)."""
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if fail_init:
            raise NVMLError("NVML Shared Library Not Found")

    nvml = SimpleNamespace(
        calls=calls,
        NVMLError=NVMLError,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: count,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"NVIDIA H200",
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}",
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=141 * GiB),
        nvmlDeviceGetCudaComputeCapability=lambda h: (9, 0),
        nvmlSystemGetDriverVersion=lambda: "560.35",
    )
    if minors is not None:
        nvml.nvmlDeviceGetMinorNumber = lambda h: minors[h]
    return nvml
