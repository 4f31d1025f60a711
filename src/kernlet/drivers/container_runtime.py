"""The container runtime's interface: what kernlet asks of Docker, and the data it gets back.

:class:`~kernlet.drivers.docker.DockerDriver` (Docker Engine over aiodocker) and
:class:`~kernlet.drivers.fake_runtime.FakeRuntime` (in memory, for unit tests) implement
:class:`ContainerRuntime`; one contract scenario (``tests/fixtures/runtime_contract.py``) runs
against both. Only plain kernlet dataclasses cross this boundary, never library objects.

Errors (``kernlet.errors``): a container that does not exist raises ContainerNotFound, an image
that does not exist ImageNotFound, anything else the engine refuses or an engine that cannot be
reached DockerError. Every method runs on the agent's event loop.

A container is *created*, *running* or *exited*; a container that is not running has an exit
code (0 for one never started). Containers and images are selected by labels, ``key=value``.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kernlet.drivers.image_ops import ImageOps, RegistryAuth

__all__ = [
    "LABEL_AGENT",
    "LABEL_KERNEL",
    "LABEL_POOL",
    "LABEL_SESSION",
    "ContainerEvent",
    "ContainerInfo",
    "ContainerRuntime",
    "ContainerSpec",
    "ImageInfo",
    "NetworkInfo",
    "PullProgress",
]

LABEL_KERNEL = "ai.kernlet.kernel-id"
LABEL_SESSION = "ai.kernlet.session-id"
#: on a warm-pool kernel's container: the pool entry (image) it was made for (docs/pool.md)
LABEL_POOL = "ai.kernlet.pool"
LABEL_AGENT = "ai.kernlet.agent-id"


@dataclass(frozen=True, slots=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class PullProgress:
    status: str
    current: int
    total: int


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What the agent asks Docker to create; every field is plain data."""

    name: str
    image: str
    cmd: tuple[str, ...]
    labels: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    #: (host path, container path, read_only)
    mounts: tuple[tuple[str, str, bool], ...] = ()
    user: str = ""
    workdir: str = ""
    #: hard CFS quota in 10^-9 cpus (Docker NanoCpus); 0: no quota
    nano_cpus: int = 0
    #: relative CPU weight under contention (Docker CpuShares, 1024 per core); 0: Docker's
    cpu_shares: int = 0
    cpuset: str = ""
    memory: int = 0
    pids_limit: int = 0
    #: container port -> host port, published on bind_host only
    ports: dict[int, int] = field(default_factory=dict)
    bind_host: str = "127.0.0.1"
    #: Docker's NetworkMode ("" for the default bridge, "none", or a network's name)
    network: str = ""
    read_only: bool = False
    #: container path -> tmpfs options (e.g. {"/tmp": "rw,nosuid,nodev,size=268435456"})
    tmpfs: dict[str, str] = field(default_factory=dict)
    #: GPUs (NVML indexes) for a Docker DeviceRequest of the "nvidia" driver (the NVIDIA
    #: container toolkit); () none
    gpus: tuple[str, ...] = ()
    #: host device nodes given at the same path, read/write/mknod in the device cgroup
    devices: tuple[str, ...] = ()
    #: bytes of /dev/shm; 0: Docker's default (64 MiB)
    shm_size: int = 0
    #: rlimit name ("nofile", "nproc") -> its soft and hard limit
    ulimits: dict[str, int] = field(default_factory=dict)
    #: the container's hostname ("" : Docker's, the short id)
    hostname: str = ""
    #: more names of the container on ``network`` (a user-defined network only)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    id: str
    name: str
    running: bool
    status: str
    exit_code: int | None
    oom_killed: bool
    labels: dict[str, str]
    #: creation time, UTC epoch seconds
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    name: str
    labels: dict[str, str]
    #: creation time, UTC epoch seconds
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    """One Docker event about a container (action: die, oom, destroy, start...)."""

    action: str
    container_id: str
    #: the container's labels plus Docker's attributes (name, image; exitCode on die)
    labels: dict[str, str]
    exit_code: int | None


class ContainerRuntime(ImageOps, Protocol):
    """What kernlet needs from a container engine: images (pull here; commit, push, tag,
    remove and the inventory in :class:`~kernlet.drivers.image_ops.ImageOps`), containers,
    exec, logs, events."""

    async def close(self) -> None:
        """Release the connection; the runtime may be used again afterwards (it reconnects)."""
        ...

    async def ping(self) -> None:
        """Return when the engine answers; DockerError when it does not."""
        ...

    async def runtimes(self) -> builtins.list[str]:
        """The OCI runtimes the engine offers (Docker info's ``Runtimes``: "runc", maybe
        "nvidia"); DockerError when it does not answer."""
        ...

    async def ensure_network(self, name: str, internal: bool,
                             labels: dict[str, str] | None = None) -> None:
        """Make the bridge network ``name`` with ``labels`` unless it exists (``internal``:
        no egress, no published ports); DockerError when the engine refuses."""
        ...

    async def remove_network(self, name: str) -> None:
        """Remove the network ``name``; one already gone is not an error. DockerError when
        the engine refuses (e.g. containers are still attached)."""
        ...

    async def networks(self, labels: dict[str, str]) -> builtins.list[NetworkInfo]:
        """Networks carrying every one of these labels."""
        ...

    async def image(self, name: str) -> ImageInfo:
        """The local image ``name`` (with tag). ImageNotFound if it is not on this node."""
        ...

    async def pull(
        self, name: str, on_progress: Callable[[PullProgress], None] | None = None,
        auth: RegistryAuth | None = None,
    ) -> ImageInfo:
        """Pull ``name`` from its registry (with ``auth``, for this call only), calling
        ``on_progress`` as bytes arrive; the image.

        Refused credentials raise RegistryAuthFailed; any other failure (unknown repository
        or tag, registry error mid-stream) DockerError.
        """
        ...

    async def images(self, label: str) -> builtins.list[ImageInfo]:
        """Local images carrying ``label`` (``key`` or ``key=value``)."""
        ...

    async def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; its full id. ImageNotFound if ``spec.image`` is
        not local; DockerError if the name is taken or the engine refuses the spec."""
        ...

    async def start(self, container_id: str) -> None:
        """Start a created or exited container; no-op if running. ContainerNotFound."""
        ...

    async def stop(self, container_id: str, grace: float) -> None:
        """Ask the container's process to stop (SIGINT), SIGKILL after ``grace`` seconds;
        returns once it exited (a "die" event follows). No-op if not running.
        ContainerNotFound if it does not exist."""
        ...

    async def remove(self, container_id: str, wait: float = 30.0) -> None:
        """Remove the container, killing it if running (force). A container already gone, or
        being removed by someone else, is not an error: this returns once it is gone (or after
        ``wait`` seconds)."""
        ...

    async def inspect(self, container_id: str) -> ContainerInfo:
        """The container's state now. ContainerNotFound if it does not exist."""
        ...

    async def list(self, labels: dict[str, str]) -> builtins.list[ContainerInfo]:
        """Containers, running or not, carrying every one of these labels (newest first)."""
        ...

    async def exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        user: str = "",
        workdir: str = "",
        env: dict[str, str] | None = None,
        wait: float | None = None,
    ) -> int | None:
        """Run ``argv`` in the running container, detached. With ``wait``, wait up to that
        many seconds for its exit code (DockerError if still running); else None at once.
        ContainerNotFound if the container is gone; DockerError if it is not running."""
        ...

    async def logs(self, container_id: str, tail: int = 1000, since: float | None = None,
                   timestamps: bool = False) -> str:
        """The last ``tail`` lines of the container's stdout and stderr (only those logged
        at or after ``since``, epoch s; each after its RFC 3339 time with ``timestamps``).
        ContainerNotFound."""
        ...

    def events(self, labels: dict[str, str]) -> AsyncIterator[ContainerEvent]:
        """Events of containers carrying these labels, from the first ``__anext__`` on, until
        the iterator is closed or cancelled. Never raises: a broken stream is reconnected
        (events during the gap are lost; the relist is the safety net)."""
        ...
