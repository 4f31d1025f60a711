"""Event types: frozen, slotted dataclasses with a stable type name and a version.

Every event that kernlet writes to its log or pushes to the manager is one of these bodies,
wrapped in an :class:`Envelope` that carries the kernel id, the per-kernel sequence number, a
unique event id and the UTC time. Type names are part of the wire and log format: never rename
one; add a new version and an upgrader in :mod:`kernlet.events.codec` instead. The base
class, the envelope and :data:`AGENT_STREAM` are in :mod:`kernlet.events.base`, re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from kernlet.events.base import AGENT_STREAM, Envelope, EventBody, new_envelope

__all__ = [
    "AGENT_STREAM",
    "AgentError",
    "AgentStarted",
    "AgentTerminated",
    "ContainerCreated",
    "Envelope",
    "EventBody",
    "ExecutionFinished",
    "ExecutionStarted",
    "ExecutionTimeout",
    "ImageCommitFinished",
    "ImageCommitStarted",
    "ImageInventoryChanged",
    "ImagePullProgress",
    "ImagePulled",
    "ImagePushProgress",
    "ImagePushed",
    "ImagesPurged",
    "KernelActorRestarted",
    "KernelCreating",
    "KernelHandedOver",
    "KernelPreparing",
    "KernelPulling",
    "KernelRestarting",
    "KernelStarted",
    "KernelTerminated",
    "KernelTerminating",
    "NetworkCreated",
    "NetworkRemoved",
    "OrphanRemoved",
    "SessionFailure",
    "SessionSuccess",
    "new_envelope",
]

@dataclass(frozen=True, slots=True)
class KernelPreparing(EventBody):
    """The agent accepted a create request; nothing is allocated yet."""

    TYPE: ClassVar[str] = "kernel_preparing"
    session_id: str
    image: str
    #: the validated creation config (resource request, environ, bootstrap...), as plain data
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KernelPulling(EventBody):
    """The image is missing locally and is being pulled."""

    TYPE: ClassVar[str] = "kernel_pulling"
    image: str


@dataclass(frozen=True, slots=True)
class KernelCreating(EventBody):
    """Resources are allocated and the scratch dir exists; the container is about to be made."""

    TYPE: ClassVar[str] = "kernel_creating"
    #: v2 added ``devices``
    VERSION: ClassVar[int] = 2
    #: slot name -> amount as a string (e.g. {"cpu": "1", "mem": "268435456"})
    slots: dict[str, str] = field(default_factory=dict)
    #: host cores pinned to this kernel (CpusetCpus)
    cpuset: tuple[int, ...] = ()
    #: host ports reserved for the kernel's service ports
    ports: tuple[int, ...] = ()
    scratch_dir: str = ""
    #: slot -> device id -> amount, for slots whose placement the cpuset does not say
    #: (e.g. cuda.shares); cpu and mem need none
    devices: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainerCreated(EventBody):
    """The container exists (created, not yet started). Logged before it is started."""

    TYPE: ClassVar[str] = "container_created"
    container_id: str


@dataclass(frozen=True, slots=True)
class KernelStarted(EventBody):
    """The container runs and its runtime answered: the kernel can run code."""

    TYPE: ClassVar[str] = "kernel_started"
    container_id: str
    #: the creation result reported to the manager (host, service ports, resource spec...)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KernelRestarting(EventBody):
    """The kernel is being recreated with the same allocation and scratch dir."""

    TYPE: ClassVar[str] = "kernel_restarting"
    reason: str = "restarting"


@dataclass(frozen=True, slots=True)
class KernelTerminating(EventBody):
    """The kernel is being stopped and cleaned up."""

    TYPE: ClassVar[str] = "kernel_terminating"
    reason: str


@dataclass(frozen=True, slots=True)
class KernelTerminated(EventBody):
    """The kernel is gone and everything it held is released (final)."""

    TYPE: ClassVar[str] = "kernel_terminated"
    reason: str
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class KernelHandedOver(EventBody):
    """A warm-pool kernel was taken by a create (docs/pool.md): its container, dirs and
    holdings now belong to ``kernel_id``, whose stream begins in the same transaction. Final
    for the pool kernel, with nothing torn down (reason ``pool-taken``)."""

    TYPE: ClassVar[str] = "kernel_handed_over"
    #: the kernel the create asked for, which now owns everything this one held
    kernel_id: str


@dataclass(frozen=True, slots=True)
class KernelActorRestarted(EventBody):
    """The kernel's actor crashed and was restarted from the kernel's event stream."""

    TYPE: ClassVar[str] = "kernel_actor_restarted"
    error: str


@dataclass(frozen=True, slots=True)
class ExecutionStarted(EventBody):
    """A run of user code began in the kernel."""

    TYPE: ClassVar[str] = "execution_started"
    #: v2 added ``timeout`` and ``session``, so that a run adopted after an agent restart
    #: keeps its time limit and a batch job still ends with session_success/failure
    VERSION: ClassVar[int] = 2
    run_id: str
    mode: str
    #: the run's time limit in seconds (None: none)
    timeout: float | None = None
    #: a background batch job (trigger_batch_execution): its end is a session event
    session: bool = False


@dataclass(frozen=True, slots=True)
class ExecutionFinished(EventBody):
    """A run of user code ended (status: finished, exec-timeout, cancelled...)."""

    TYPE: ClassVar[str] = "execution_finished"
    run_id: str
    status: str
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class AgentStarted(EventBody):
    """The agent process came up (reason: e.g. self-started, restarted-after-crash)."""

    TYPE: ClassVar[str] = "agent_started"
    reason: str
    agent_id: str = ""


@dataclass(frozen=True, slots=True)
class AgentTerminated(EventBody):
    """The agent is shutting down; its kernels keep running."""

    TYPE: ClassVar[str] = "agent_terminated"
    reason: str
    agent_id: str = ""


@dataclass(frozen=True, slots=True)
class AgentError(EventBody):
    """An unexpected failure inside the agent (the agent kept running)."""

    TYPE: ClassVar[str] = "agent_error"
    message: str
    traceback: str = ""


@dataclass(frozen=True, slots=True)
class ExecutionTimeout(EventBody):
    """A run exceeded its time limit and was interrupted (the kernel stays usable)."""

    TYPE: ClassVar[str] = "execution_timeout"
    run_id: str
    timeout: float


@dataclass(frozen=True, slots=True)
class SessionSuccess(EventBody):
    """A batch job started by trigger_batch_execution ended with exit code 0."""

    TYPE: ClassVar[str] = "session_success"
    run_id: str
    reason: str = "task-finished"
    exit_code: int = 0


@dataclass(frozen=True, slots=True)
class SessionFailure(EventBody):
    """A batch job failed (task-failed), was cancelled (task-cancelled) or timed out."""

    TYPE: ClassVar[str] = "session_failure"
    run_id: str
    reason: str
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class ImagePullProgress(EventBody):
    """Progress of check_and_pull (agent stream)."""

    TYPE: ClassVar[str] = "image_pull_progress"
    image: str
    status: str
    #: bytes done / total over all layers so far (0 when unknown)
    current: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True)
class ImagePulled(EventBody):
    """check_and_pull ended (agent stream): ok with the image id, or the error."""

    TYPE: ClassVar[str] = "image_pulled"
    #: v2 added ``error_type`` (the kernlet error's class name, e.g. RegistryAuthFailed)
    VERSION: ClassVar[int] = 2
    image: str
    ok: bool
    image_id: str = ""
    error: str = ""
    error_type: str = ""


@dataclass(frozen=True, slots=True)
class ImageCommitStarted(EventBody):
    """commit_kernel began (agent stream): the kernel's container becomes image ``image``."""

    TYPE: ClassVar[str] = "image_commit_started"
    commit_id: str
    kernel_id: str
    #: the new image's name, ``repo:tag``
    image: str
    container_id: str = ""


@dataclass(frozen=True, slots=True)
class ImageCommitFinished(EventBody):
    """commit_kernel ended (agent stream): ok with the new image's id, or the error (also
    recorded, failed, for a commit an agent restart cut short)."""

    TYPE: ClassVar[str] = "image_commit_finished"
    commit_id: str
    kernel_id: str
    image: str
    ok: bool
    image_id: str = ""
    error: str = ""
    error_type: str = ""


@dataclass(frozen=True, slots=True)
class ImagePushProgress(EventBody):
    """Progress of push_image (agent stream): status "started" first, then at most one a
    second (bytes over all layers)."""

    TYPE: ClassVar[str] = "image_push_progress"
    image: str
    status: str
    current: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True)
class ImagePushed(EventBody):
    """push_image ended (agent stream): ok with the registry's digest, or the error."""

    TYPE: ClassVar[str] = "image_pushed"
    image: str
    ok: bool
    digest: str = ""
    error: str = ""
    error_type: str = ""


@dataclass(frozen=True, slots=True)
class ImagesPurged(EventBody):
    """purge_images ended (agent stream): the names removed and those refused, with why."""

    TYPE: ClassVar[str] = "images_purged"
    removed: tuple[str, ...] = ()
    #: name -> reason (in use by a live kernel, in use by a container, not found...)
    refused: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageInventoryChanged(EventBody):
    """The periodic image rescan found kernel images added or removed (agent stream):
    names ``repo:tag`` (or the id of an untagged image)."""

    TYPE: ClassVar[str] = "image_inventory_changed"
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OrphanRemoved(EventBody):
    """A container with this agent's labels but no live kernel was removed (agent stream)."""

    TYPE: ClassVar[str] = "orphan_removed"
    container_id: str
    kernel_id: str = ""
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class NetworkCreated(EventBody):
    """A session's bridge network exists (agent stream; docs/sessions.md)."""

    TYPE: ClassVar[str] = "network_created"
    network: str
    session_id: str = ""
    #: "agent" (removed after the session's last kernel) or "manager" (create_local_network:
    #: removed only by destroy_local_network)
    owner: str = "agent"


@dataclass(frozen=True, slots=True)
class NetworkRemoved(EventBody):
    """A session's network is gone (agent stream). reason: last-kernel-gone,
    manager-requested, orphan (the reconciler found it with no kernel), failed-to-create."""

    TYPE: ClassVar[str] = "network_removed"
    network: str
    reason: str
    session_id: str = ""
