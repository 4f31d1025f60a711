"""Container layout and the loop-side coroutines the hooks (:mod:`kernlet.actors.hooks`)
are made of; each is safe to run twice and for a kernel that never got that far:

- :func:`prepare_dirs`: scratch ``<var>/scratch/<kid>/work`` (a plain dir, a tmpfs or a loop
  image: :mod:`kernlet.drivers.scratch`) and runtime dir ``<var>/ipc/<kid>``
- :func:`container_spec`: the container as plain data (mounts, limits, labels, user)
- :func:`create_container`, :func:`pull_image`
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import kernlet
from kernlet.config import AgentConfig
from kernlet.config_registries import RegistrySection, registry_auth
from kernlet.drivers import scratch, storage
from kernlet.drivers.container_runtime import (
    LABEL_AGENT,
    LABEL_KERNEL,
    LABEL_POOL,
    LABEL_SESSION,
    ContainerRuntime,
    ContainerSpec,
    ImageInfo,
    PullProgress,
)
from kernlet.drivers.image_ops import RegistryAuth
from kernlet.drivers.resources import CudaAccess, cuda_device_ids, cuda_parts
from kernlet.errors import DockerError, RegistryAuthFailed
from kernlet.events import KernelState
from kernlet.layout import (
    BOOTSTRAP_NAME,
    CONFIG_IN_CONTAINER,
    IPC_IN_CONTAINER,
    LIB_IN_CONTAINER,
    SOCKET_NAME,
    START_TIMEOUT_ENV,
    WORK_IN_CONTAINER,
)

__all__ = [
    "POOL_KEY",
    "KernelDirs",
    "config_dir",
    "container_spec",
    "create_container",
    "home_dirs",
    "home_id",
    "kernel_dirs",
    "prepare_dirs",
    "registry_auth_of",
]



@dataclass(frozen=True, slots=True)
class KernelDirs:
    scratch: Path
    work: Path
    ipc: Path

    @property
    def socket(self) -> Path:
        return self.ipc / SOCKET_NAME


def kernel_dirs(cfg: AgentConfig, kernel_id: str) -> KernelDirs:
    scratch = cfg.scratch_root / kernel_id
    return KernelDirs(scratch=scratch, work=scratch / "work", ipc=cfg.ipc_root / kernel_id)


#: the config key of a warm-pool kernel (``{"entry": image}``) and of a kernel taken from the
#: pool (``{"from": pool kernel id}``); docs/pool.md
POOL_KEY = "pool"


def home_id(state: KernelState) -> str:
    """Whose dirs (scratch, runtime, config) a kernel lives in: its own, or, for a kernel
    taken from the warm pool, the pool kernel's (its container was made with them)."""
    pool = state.config.get(POOL_KEY) or {}
    return str(pool.get("from") or state.kernel_id)


def home_dirs(cfg: AgentConfig, state: KernelState) -> KernelDirs:
    """:func:`kernel_dirs` of the kernel's :func:`home_id`."""
    return kernel_dirs(cfg, home_id(state))


def config_dir(var_dir: Path, kernel_id: str) -> Path:
    """The kernel's config dir on the host (``/home/config``, read-only, in the container)."""
    return var_dir / "config" / kernel_id


def _prepare(cfg: AgentConfig, dirs: KernelDirs, bootstrap: str) -> None:
    c = cfg.container
    uid, gid = c.kernel_uid, c.kernel_gid
    for path in (dirs.work, dirs.ipc):
        path.mkdir(parents=True, exist_ok=True)
        if path == dirs.work:
            scratch.mount(path, c.scratch_type, c.scratch_size, uid, gid)
        os.chown(path, uid, gid)
    stale = dirs.socket
    with contextlib.suppress(FileNotFoundError):
        stale.unlink()
    if bootstrap:
        script = dirs.work / BOOTSTRAP_NAME
        script.write_text(bootstrap)
        os.chown(script, uid, gid)


def names_registry(image: str) -> bool:
    """Whether an image name starts with a registry host (``localhost:5000/x``, ``r.io/x``)."""
    first, sep, _ = image.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


async def pull_image(
    docker: ContainerRuntime, image: str, timeout: float,
    on_progress: Callable[[PullProgress], None] | None = None, key: str = "timeout",
    registries: dict[str, RegistrySection] | None = None,
) -> ImageInfo:
    """Pull with a time limit (the value of ``key``), with the credentials ``registries``
    has for the image's registry; DockerError on failure or timeout, RegistryAuthFailed
    when the registry refuses them."""
    auth = await registry_auth_of(registries or {}, image)
    try:
        return await asyncio.wait_for(docker.pull(image, on_progress, auth), timeout)
    except TimeoutError as exc:
        raise DockerError(f"pull {image}: not done after {timeout:g} s ({key})") from exc


async def registry_auth_of(
    registries: dict[str, RegistrySection], image: str
) -> RegistryAuth | None:
    """The credentials for the image's registry (files read off the loop);
    RegistryAuthFailed naming the file when a password or token file cannot be read."""
    try:
        return await asyncio.to_thread(registry_auth, registries, image)
    except OSError as exc:
        raise RegistryAuthFailed(str(exc)) from None


async def prepare_dirs(cfg: AgentConfig, kernel_id: str, bootstrap: str) -> KernelDirs:
    dirs = kernel_dirs(cfg, kernel_id)
    await asyncio.to_thread(_prepare, cfg, dirs, bootstrap)
    return dirs


def container_spec(
    cfg: AgentConfig,
    state: KernelState,
    dirs: KernelDirs,
    ports: dict[int, int],
    cuda: CudaAccess | None = None,
) -> ContainerSpec:
    """The container for a kernel: its recorded allocation (cores, cpu amount, memory), its
    service ports (container port -> host port), the agent's mounts, user and limits.

    The cpu request is a guarantee: the cpuset plus CPU shares of 1024 per core requested
    (Docker's bounds 2..262144). A hard quota comes only from ``container.cpu-limit``: the
    request times its factor, at most the cpuset's cores and at least 0.01 (Docker's least).
    GPUs: those of the recorded device map, given the way ``cuda`` says (``cuda_parts``), so
    a restart or a recovery gives the same ones."""
    kernel_id, session_id, kconfig = state.kernel_id, state.session_id, state.config
    cpu = float(state.slots.get("cpu") or cfg.container.default_cpu)
    factor = cfg.container.cpu_limit_factor
    quota = 0.0 if factor is None else cpu * factor
    if quota and state.cpuset:
        quota = min(quota, len(state.cpuset))
    mem = int(state.slots.get("mem") or cfg.container.default_mem)
    lib = Path(kernlet.__file__).resolve().parent
    environ = {str(k): str(v) for k, v in (kconfig.get("environ") or {}).items()}
    gpu = cuda_parts(cuda, cuda_device_ids(state.devices), environ)
    env = {
        **thread_hints(cpu),  # the user's environ may set them otherwise
        **environ,
        **gpu.env,
        "HOME": WORK_IN_CONTAINER,
        "PYTHONPATH": LIB_IN_CONTAINER,
        "PYTHONDONTWRITEBYTECODE": "1",
        "KERNLET_KERNEL_ID": kernel_id,
        "KERNLET_SESSION_ID": session_id,
        "KERNLET_SOCKET": f"{IPC_IN_CONTAINER}/{SOCKET_NAME}",
        START_TIMEOUT_ENV: str(cfg.agent.create_timeout),  # the runtime's ipykernel window
    }
    return ContainerSpec(
        name=f"kernlet.{kernel_id}",
        image=state.image,
        cmd=("/bin/sh", f"{LIB_IN_CONTAINER}/kernlet/runner/entrypoint.sh"),
        labels={
            LABEL_KERNEL: kernel_id,
            LABEL_SESSION: session_id,
            LABEL_AGENT: cfg.agent.id,
            **({LABEL_POOL: str(pool["entry"])} if (pool := kconfig.get(POOL_KEY) or {})
               and pool.get("entry") else {}),
        },
        env=env,
        mounts=(
            (str(dirs.work), WORK_IN_CONTAINER, False),
            (str(dirs.ipc), IPC_IN_CONTAINER, False),
            (str(lib), f"{LIB_IN_CONTAINER}/kernlet", True),
            *gpu.mounts,
            (str(config_dir(cfg.agent.var_dir, home_id(state))), CONFIG_IN_CONTAINER, True),
            *storage.binds(cfg.agent.var_dir, kernel_id, kconfig.get("mounts") or []),
        ),
        user=f"{cfg.container.kernel_uid}:{cfg.container.kernel_gid}",
        workdir=WORK_IN_CONTAINER,
        nano_cpus=round(max(quota, 0.01) * 1e9) if quota else 0,
        cpu_shares=min(max(round(cpu * 1024), 2), 262144),
        cpuset=",".join(str(c) for c in state.cpuset),
        memory=mem,
        ports=ports if publishes_ports(cfg) else {},
        pids_limit=cfg.container.pids_limit,
        bind_host=cfg.container.bind_host,
        network=network_mode(cfg),
        read_only=cfg.container.read_only_root,
        tmpfs=({"/tmp": f"rw,nosuid,nodev,size={cfg.container.tmp_size}"}
               if cfg.container.read_only_root else {}),
        gpus=gpu.gpus,
        devices=gpu.devices,
        shm_size=int(kconfig.get("shm_size") or cfg.container.shm_size),
        ulimits=ulimits(cfg)[0],
    )


_RLIMITS = {"nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC}


def ulimits(cfg: AgentConfig) -> tuple[dict[str, int], list[str]]:
    """A kernel's rlimits (``container.ulimit-*``), each at most the agent's own hard limit
    (Docker cannot give a container more than dockerd has: runc fails the start); and a note
    for each one clamped."""
    c = cfg.container
    out, notes = {}, []
    for name, want in (("nofile", c.ulimit_nofile), ("nproc", c.ulimit_nproc)):
        hard = resource.getrlimit(_RLIMITS[name])[1]
        if hard != resource.RLIM_INFINITY and want > hard:
            notes.append(f"container.ulimit-{name} = {want} is above this host's hard limit; "
                         f"kernels get {hard} (raise the limit of dockerd and the agent, e.g. "
                         f"systemd's Limit{name.upper()})")
            want = hard
        out[name] = want
    return out, notes


def thread_hints(cpu: float) -> dict[str, str]:
    """OMP_NUM_THREADS, MKL_NUM_THREADS and NPROC: the cores the kernel's cpu request
    spans (its cpuset has that many), at least 1."""
    n = str(max(1, math.ceil(cpu)))
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "NPROC": n}


#: the Docker network of ``container.network = "internal"`` (made by the agent at start)
INTERNAL_NETWORK = "kernlet-internal"


def network_mode(cfg: AgentConfig) -> str:
    """Docker's NetworkMode for the kernels ("" is Docker's default bridge)."""
    return {"bridge": "", "none": "none", "internal": INTERNAL_NETWORK}[cfg.container.network]


def publishes_ports(cfg: AgentConfig) -> bool:
    """Whether kernels' service ports are published on the bind host (only on the bridge)."""
    return cfg.container.network == "bridge"


async def create_container(docker: ContainerRuntime, spec: ContainerSpec) -> str:
    """Create the container; a leftover of an earlier try with the same name is removed first."""
    for old in await docker.list({LABEL_KERNEL: spec.labels[LABEL_KERNEL]}):
        if old.name == spec.name:
            await docker.remove(old.id)
    return await docker.create(spec)
