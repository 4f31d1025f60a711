"""How this node gives its GPUs to containers, and what one kernel's container gets for them.

Chosen once at start (``[resource] cuda-access``, default ``auto``)::

    toolkit        the NVIDIA container toolkit is there (Docker's info lists an "nvidia"
                   runtime, or nvidia-container-runtime-hook is on the agent's PATH): the
                   container gets a Docker DeviceRequest (driver "nvidia", DeviceIDs = NVML
                   indexes); the toolkit's hook adds device nodes, driver libraries, nvidia-smi
    device-nodes   no toolkit: the container gets /dev/nvidiactl (and /dev/nvidia-uvm,
                   /dev/nvidia-uvm-tools, /dev/nvidia-modeset where they exist), the
                   /dev/nvidia<minor> node of each of its GPUs, and the driver's user-space
                   libraries bind-mounted read-only under /usr/local/nvidia/lib64 (nvidia-smi
                   under /usr/local/nvidia/bin): the layout CUDA images already name in their
                   LD_LIBRARY_PATH and PATH

Either way the container's environment says which GPUs it holds (see :func:`cuda_parts`). The
device-nodes way does not hide the host's other GPUs from listings inside the container (the
toolkit masks /proc/driver/nvidia; kernlet does not), but they cannot be opened. A
node advertises a cuda slot only for GPUs it can give (:func:`cuda_for_containers`): NVML
sees them AND the toolkit is there or their device nodes and libnvidia-ml + libcuda exist.
Detection reads a few directory entries once, at start; everything else is pure.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kernlet.drivers.resources._alloc import SlotPool, device_key
from kernlet.drivers.resources._plugins import PluginInfo
from kernlet.drivers.resources._slots import CUDA_DEVICE, CUDA_SHARES
from kernlet.errors import InsufficientResource

__all__ = [
    "CUDA_ACCESS_MODES",
    "CudaAccess",
    "CudaParts",
    "cuda_device_ids",
    "cuda_for_containers",
    "cuda_parts",
    "probe_cuda_access",
]

log = logging.getLogger(__name__)

CUDA_ACCESS_MODES = ("auto", "toolkit", "device-nodes")
#: where device-nodes mode puts the driver's files inside the container
LIB_IN_CONTAINER = "/usr/local/nvidia/lib64"
BIN_IN_CONTAINER = "/usr/local/nvidia/bin"
#: the host's library and binary directories searched, first match per library wins
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
            "/usr/lib", "/usr/local/nvidia/lib64")
BIN_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/local/nvidia/bin")
#: driver libraries given in device-nodes mode (every ``<name>.<version>`` entry found);
#: the first two are required
LIBS = ("libnvidia-ml.so", "libcuda.so", "libnvidia-ptxjitcompiler.so", "libnvidia-nvvm.so",
        "libnvidia-gpucomp.so", "libnvidia-allocator.so", "libnvidia-cfg.so",
        "libcudadebugger.so")
REQUIRED_LIBS = ("libnvidia-ml.so.1", "libcuda.so.1")
BINS = ("nvidia-smi",)
_LIB_PATHS = tuple(map(Path, LIB_DIRS))
_BIN_PATHS = tuple(map(Path, BIN_DIRS))
#: control nodes: the first is required, the others are given where they exist
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
TOOLKIT_HOOK = "nvidia-container-runtime-hook"
#: NVIDIA_VISIBLE_DEVICES for a kernel without GPUs under the toolkit: the toolkit gives none
#: (an image's own NVIDIA_VISIBLE_DEVICES=all must not reach GPUs it does not hold)
NO_GPUS = "void"


@dataclass(frozen=True, slots=True)
class CudaAccess:
    """How this node gives GPUs to containers (see the module's docstring)."""

    #: "toolkit" or "device-nodes"
    mode: str
    #: device-nodes: device id (NVML index) -> its host device node (/dev/nvidia<minor>)
    nodes: dict[str, str] = field(default_factory=dict)
    #: device-nodes: the host's control nodes every GPU container gets
    control: tuple[str, ...] = ()
    #: device-nodes: (host path, container path) of the driver's libraries and binaries
    files: tuple[tuple[str, str], ...] = ()
    #: device-nodes: device id -> GPU UUID (what CUDA_VISIBLE_DEVICES names there)
    uuids: dict[str, str] = field(default_factory=dict)

    def to_plain(self) -> dict[str, Any]:
        return {"mode": self.mode, "nodes": dict(self.nodes), "control": list(self.control),
                "files": [c for _, c in self.files], "uuids": dict(self.uuids)}


@dataclass(frozen=True, slots=True)
class CudaParts:
    """What a kernel's container gets for the GPUs it holds (merged into its ContainerSpec)."""

    #: device ids for a Docker DeviceRequest of the "nvidia" driver (toolkit)
    gpus: tuple[str, ...] = ()
    #: host device nodes, given at the same path (device-nodes)
    devices: tuple[str, ...] = ()
    #: (host path, container path, read_only) (device-nodes)
    mounts: tuple[tuple[str, str, bool], ...] = ()
    env: dict[str, str] = field(default_factory=dict)


def cuda_device_ids(devices: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """The GPUs (NVML indexes) a kernel holds, from its recorded device map (slot -> device
    -> amount: kernel_creating's ``devices``), in id order."""
    ids = {d for slot in (CUDA_DEVICE.name, CUDA_SHARES.name) for d in devices.get(slot, {})}
    return tuple(sorted(ids, key=device_key))


def cuda_parts(access: CudaAccess | None, device_ids: Sequence[str],
               environ: Mapping[str, str] | None = None) -> CudaParts:
    """The container's share of GPUs ``device_ids`` (empty: none held).

    Env: ``NVIDIA_VISIBLE_DEVICES`` and ``KERNLET_CUDA_DEVICES`` = the host's indexes,
    ``NVIDIA_DRIVER_CAPABILITIES=compute,utility``, and ``CUDA_VISIBLE_DEVICES``: under the
    toolkit ``0..n-1`` (the container sees only its GPUs, numbered from 0); with device nodes
    the GPUs' UUIDs (the driver may still list the host's other GPUs there, unusable: their
    nodes are absent and the device cgroup denies them, so an index could name the wrong
    one), with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` and the libraries' directory in front of
    ``environ``'s ``LD_LIBRARY_PATH``. Under the toolkit a kernel without GPUs gets
    ``NVIDIA_VISIBLE_DEVICES=void``. InsufficientResource if the kernel holds GPUs this node
    cannot give (now)."""
    if not device_ids:
        return CudaParts(env={"NVIDIA_VISIBLE_DEVICES": NO_GPUS}
                         if access is not None and access.mode == "toolkit" else {})
    ids = ",".join(device_ids)
    if access is None:
        raise InsufficientResource(f"cuda: the kernel holds GPUs {ids} but this node cannot "
                                   "give GPUs to containers (no toolkit, no device nodes)")
    env = {
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(device_ids))),
        "NVIDIA_VISIBLE_DEVICES": ids,
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
        "KERNLET_CUDA_DEVICES": ids,
    }
    if access.mode == "toolkit":
        return CudaParts(gpus=tuple(device_ids), env=env)
    missing = [d for d in device_ids if d not in access.nodes]
    if missing:
        raise InsufficientResource(f"cuda: no device node for GPU(s) {missing} on this node")
    if all(d in access.uuids for d in device_ids):
        env["CUDA_VISIBLE_DEVICES"] = ",".join(access.uuids[d] for d in device_ids)
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    old = (environ or {}).get("LD_LIBRARY_PATH", "")
    env["LD_LIBRARY_PATH"] = f"{LIB_IN_CONTAINER}:{old}" if old else LIB_IN_CONTAINER
    return CudaParts(
        devices=(*access.control, *(access.nodes[d] for d in device_ids)),
        mounts=tuple((host, inside, True) for host, inside in access.files),
        env=env,
    )


def _driver_files(lib_dirs: Iterable[Path], bin_dirs: Iterable[Path]
                  ) -> list[tuple[str, str]]:
    files: list[tuple[str, str]] = []
    lib_dirs, bin_dirs = list(lib_dirs), list(bin_dirs)
    for lib in LIBS:
        pattern = re.compile(re.escape(lib) + r"\.[0-9][0-9.]*$")
        for d in lib_dirs:
            found = sorted(p for p in d.glob(lib + ".*") if pattern.match(p.name))
            if found:
                files += [(str(p.resolve()), f"{LIB_IN_CONTAINER}/{p.name}") for p in found]
                break
    for name in BINS:
        for d in bin_dirs:
            if (d / name).is_file():
                files.append((str((d / name).resolve()), f"{BIN_IN_CONTAINER}/{name}"))
                break
    return files


def probe_cuda_access(
    plugin: PluginInfo,
    setting: str,
    docker_runtimes: Sequence[str],
    *,
    dev: Path = Path("/dev"),
    lib_dirs: Sequence[Path] = _LIB_PATHS,
    bin_dirs: Sequence[Path] = _BIN_PATHS,
    which: Callable[[str], str | None] = shutil.which,
) -> tuple[CudaAccess | None, str]:
    """How GPUs of the cuda ``plugin`` can reach containers (None: they cannot), and why."""
    if setting not in CUDA_ACCESS_MODES:
        raise ValueError(f"cuda-access must be one of {CUDA_ACCESS_MODES}, not {setting!r}")
    toolkit = "nvidia" in docker_runtimes or which(TOOLKIT_HOOK) is not None
    if setting == "toolkit" or (setting == "auto" and toolkit):
        why = ("forced by resource.cuda-access" if setting == "toolkit" else
               "Docker has the nvidia runtime" if "nvidia" in docker_runtimes else
               f"{TOOLKIT_HOOK} is on PATH")
        return CudaAccess("toolkit"), why
    if not (dev / CONTROL_NODES[0]).exists():
        return None, f"no toolkit and no {dev / CONTROL_NODES[0]}"
    files = _driver_files(lib_dirs, bin_dirs)
    names = {Path(inside).name for _, inside in files}
    lacking = [lib for lib in REQUIRED_LIBS if lib not in names]
    if lacking:
        return None, f"no toolkit and no {', '.join(lacking)} in {', '.join(map(str, lib_dirs))}"
    nodes = {str(d["id"]): str(dev / f"nvidia{d.get('minor', d['id'])}")
             for d in plugin.info.get("devices", [])}
    nodes = {i: n for i, n in nodes.items() if Path(n).exists()}
    if not nodes:
        return None, f"no toolkit and no /dev/nvidia<minor> node for any GPU under {dev}"
    control = tuple(str(dev / n) for n in CONTROL_NODES if (dev / n).exists())
    uuids = {str(d["id"]): str(d["uuid"]) for d in plugin.info.get("devices", [])
             if d.get("uuid") and str(d["id"]) in nodes}
    return CudaAccess("device-nodes", nodes, control, tuple(files), uuids), "device nodes found"


def cuda_for_containers(
    plugins: Sequence[PluginInfo], setting: str, docker_runtimes: Sequence[str],
    **roots: Any,
) -> tuple[list[PluginInfo], CudaAccess | None]:
    """The plugins as advertised: the cuda plugin keeps only the GPUs containers can be
    given (none: it is left out, logged at WARNING), and its facts say how (``access``)."""
    out: list[PluginInfo] = []
    access: CudaAccess | None = None
    for plugin in plugins:
        if plugin.key != "cuda":
            out.append(plugin)
            continue
        access, why = probe_cuda_access(plugin, setting, docker_runtimes, **roots)
        if access is None:
            log.warning("cuda: NVML sees %d GPU(s) but containers cannot be given them (%s): "
                        "no cuda slot advertised", len(plugin.info.get("devices", [])), why)
            continue
        keep = (None if access.mode == "toolkit" else set(access.nodes))
        pools = tuple(SlotPool(p.spec, {d: c for d, c in p.devices.items()
                                        if keep is None or d in keep})
                      for p in plugin.pools)
        log.info("cuda: %s (%s)", access.mode, why)
        out.append(replace(plugin, pools=pools,
                           info={**plugin.info, "access": access.to_plain()}))
    return out, access
