"""Messages between kernlet's actors. Immutable; each field documented."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kernlet.actors.reply import Reply
from kernlet.actors.runs import Sink
from kernlet.events import KernelState
from kernlet.protocol import Execute

__all__ = [
    "Allocate",
    "Allocated",
    "Command",
    "Complete",
    "ContainerDied",
    "Create",
    "Describe",
    "Destroy",
    "InjectedFault",
    "Interrupt",
    "JoinNetwork",
    "KernelGone",
    "KernelUpdated",
    "LeaveNetwork",
    "RecordAgentEvent",
    "Recover",
    "Release",
    "Relist",
    "Restart",
    "RunCode",
    "RunFinished",
    "RunTimedOut",
    "Shutdown",
    "StepDone",
    "TriggerBatch",
]


@dataclass(frozen=True, slots=True)
class Command:
    """A validated manager request for the agent actor."""

    #: the parsed request (a kernlet.protocol model)
    request: Any
    #: completes the NATS reply
    reply: Reply
    #: for a streaming execute: where output items go as they arrive
    sink: Sink | None = None


@dataclass(frozen=True, slots=True)
class Create:
    session_id: str
    image: str
    #: the kernel's creation config as plain data (KernelConfig.model_dump())
    config: dict[str, Any]
    #: called once with the per-kernel result dict (ok or error)
    done: Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Destroy:
    reason: str
    #: None when nobody waits for the answer (e.g. agent-initiated cleanups)
    reply: Reply | None = None


@dataclass(frozen=True, slots=True)
class Restart:
    reply: Reply


@dataclass(frozen=True, slots=True)
class RunCode:
    request: Execute
    reply: Reply
    sink: Sink | None


@dataclass(frozen=True, slots=True)
class Interrupt:
    reply: Reply


@dataclass(frozen=True, slots=True)
class Complete:
    text: str
    pos: int | None
    reply: Reply


@dataclass(frozen=True, slots=True)
class ContainerDied:
    """Docker says the kernel's container died, hit OOM, or was removed."""

    container_id: str
    #: Docker's action: die, oom, destroy
    action: str
    exit_code: int | None


@dataclass(frozen=True, slots=True)
class TriggerBatch:
    """Run a shell command as a background batch job; the end is a session event."""

    run_id: str
    code: str
    timeout: float | None
    reply: Reply


@dataclass(frozen=True, slots=True)
class RunTimedOut:
    run_id: str
    timeout: float


@dataclass(frozen=True, slots=True)
class RunFinished:
    run_id: str
    status: str
    exit_code: int | None


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """Debug only: the kernel actor raises on receipt (tests of supervision)."""


@dataclass(frozen=True, slots=True)
class Recover:
    """Sent to a kernel actor rebuilt from the log: check the container and re-adopt it."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The agent is exiting: let go of the kernel without touching its container."""


@dataclass(frozen=True, slots=True)
class StepDone:
    """The outcome of a loop-side step started by an actor, delivered back to it."""

    then: Callable[[Any], None]
    fail: Callable[[BaseException], None]
    result: Any
    error: BaseException | None
    #: the context the step was started in (its log ids, kernlet.logs); the continuation
    #: runs in it
    context: contextvars.Context | None = None


@dataclass(frozen=True, slots=True)
class Relist:
    """What Docker shows now: every container with this agent's label."""

    #: kernlet.drivers.docker.ContainerInfo items
    containers: tuple[Any, ...]
    #: UTC epoch seconds of the observation
    now: float
    #: kernlet.drivers.container_runtime.NetworkInfo items: this agent's session networks
    networks: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Allocate:
    """A kernel asks the agent for its slots and host ports (all or nothing)."""

    kernel_id: str
    #: slot -> amount (e.g. {"cpu": "0.5", "mem": "268435456"})
    request: dict[str, str]
    #: how many host ports (one per service port of the image)
    ports: int
    #: the kernel actor to answer with Allocated
    reply_to: Any


@dataclass(frozen=True, slots=True)
class Allocated:
    """The agent's answer to Allocate: what is held now, or why nothing is."""

    #: kernlet.drivers.resources.Allocation, or None on error
    allocation: Any
    ports: tuple[int, ...]
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Describe:
    """Ask the agent for a snapshot: slots, usage, plugins, live kernels (heartbeat, stats)."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Release:
    """A kernel is clean: give back its slots and ports."""

    kernel_id: str


@dataclass(frozen=True, slots=True)
class RecordAgentEvent:
    """Append an event to the agent's own stream (from any thread)."""

    #: a kernlet.events.EventBody
    body: Any


@dataclass(frozen=True, slots=True)
class KernelUpdated:
    """A kernel actor's new state, for the agent's registry."""

    state: KernelState


@dataclass(frozen=True, slots=True)
class KernelGone:
    """A kernel actor finished (its kernel terminated) and stopped."""

    kernel_id: str


@dataclass(frozen=True, slots=True)
class JoinNetwork:
    """A kernel's ``network`` hook: hold the session's network, made first if need be; the
    reply completes once the network exists (or with why it cannot)."""

    kernel_id: str
    network: str
    session_id: str
    #: "agent" (the session's own network) or "manager" (one of create_local_network)
    owner: str
    ssh: bool
    reply: Reply
    #: the kernels created with this one (a network that cannot be made fails them all)
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaveNetwork:
    """A kernel's ``network`` undo: let go; the last holder's reply waits for the removal."""

    kernel_id: str
    network: str
    reply: Reply
