"""The manager protocol over NATS: subjects, request schemas, reply shapes.

Subjects (``P`` is the configured prefix, ``kernlet`` by default; ``A`` the agent id)::

    P.agent.A.cmd.<command>        request-reply: msgpack map of arguments
    P.events.A.<kernel_id|_agent>.<event_type>
                                   lifecycle and agent events (msgpack event map; header
                                   Nats-Msg-Id = event id; JetStream stream P_EVENTS)
    <reply inbox>                  replies: {"ok": true, "result": ...} or
                                   {"ok": false, "error": {"type", "message"}}; a streaming
                                   execute sends {"ok": true, "output": [[type, data], ...]}
                                   messages before the final reply (which has "result")

Every request is validated here (pydantic, strict types, unknown fields refused) before the
agent acts on it. See docs/protocol.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from kernlet.errors import InvalidRequest, UnknownCommand

__all__ = [
    "COMMANDS",
    "CreateKernels",
    "DebugFault",
    "DestroyKernel",
    "Execute",
    "GetCompletions",
    "GetEvents",
    "InterruptKernel",
    "KernelConfig",
    "ListKernels",
    "Ping",
    "ResetAgent",
    "RestartKernel",
    "command_subject",
    "events_subject",
    "parse_request",
]

KernelId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def command_subject(prefix: str, agent_id: str, command: str) -> str:
    return f"{prefix}.agent.{agent_id}.cmd.{command}"


def events_subject(prefix: str, agent_id: str, stream: str, event_type: str) -> str:
    return f"{prefix}.events.{agent_id}.{stream}.{event_type}"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class KernelConfig(_Request):
    """How to create one kernel."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    #: CPU cores (fractions allowed); None = agent default
    cpu: Annotated[float, Field(gt=0, le=1024)] | None = None
    #: memory limit in bytes; None = agent default
    mem: Annotated[int, Field(ge=16 * 1024**2)] | None = None
    environ: dict[str, str] = Field(default_factory=dict)
    #: shell script run once in /home/work before the runtime starts
    bootstrap: Annotated[str, StringConstraints(max_length=64 * 1024)] = ""


class Ping(_Request):
    msg: str = ""


class CreateKernels(_Request):
    session_id: KernelId
    kernel_ids: Annotated[list[KernelId], Field(min_length=1, max_length=64)]
    configs: Annotated[list[KernelConfig], Field(min_length=1, max_length=64)]


class DestroyKernel(_Request):
    kernel_id: KernelId
    session_id: str = ""
    reason: Annotated[str, StringConstraints(max_length=128)] = "user-requested"


class RestartKernel(_Request):
    kernel_id: KernelId
    session_id: str = ""


class Execute(_Request):
    kernel_id: KernelId
    session_id: str = ""
    run_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    mode: Literal["query", "batch", "input", "continue"] = "query"
    code: str = ""
    #: batch mode: {"clean": str, "build": str, "exec": str}
    opts: dict[str, str | None] = Field(default_factory=dict)
    #: seconds to collect output before answering "continued"; None: until finished/input
    flush_timeout: Annotated[float, Field(gt=0, le=3600)] | None = None
    #: stream output as it is produced to the reply inbox before the final reply
    stream: bool = False


class InterruptKernel(_Request):
    kernel_id: KernelId
    session_id: str = ""


class GetCompletions(_Request):
    kernel_id: KernelId
    text: Annotated[str, StringConstraints(max_length=64 * 1024)]
    pos: int | None = None


class ListKernels(_Request):
    #: include terminated kernels still in the log
    all: bool = False


class ResetAgent(_Request):
    """Destroy every kernel of this agent (the explicit way; stopping the agent never does)."""

    reason: Annotated[str, StringConstraints(max_length=128)] = "agent-reset"


class DebugFault(_Request):
    """Make a kernel's actor raise (only with debug.fault-injection = true)."""

    kernel_id: KernelId


class GetEvents(_Request):
    kernel_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]


COMMANDS: dict[str, type[_Request]] = {
    "ping": Ping,
    "create_kernels": CreateKernels,
    "destroy_kernel": DestroyKernel,
    "restart_kernel": RestartKernel,
    "execute": Execute,
    "interrupt_kernel": InterruptKernel,
    "get_completions": GetCompletions,
    "list_kernels": ListKernels,
    "get_events": GetEvents,
    "reset_agent": ResetAgent,
    "debug_fault": DebugFault,
}


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "(request)"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def parse_request(command: str, payload: Any) -> _Request:
    """Validate one request; raises UnknownCommand or InvalidRequest naming the bad field."""
    schema = COMMANDS.get(command)
    if schema is None:
        raise UnknownCommand(f"unknown command {command!r}; known: {', '.join(sorted(COMMANDS))}")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise InvalidRequest(f"{command}: the request must be a map, not {type(payload).__name__}")
    try:
        req = schema.model_validate(payload)
    except ValidationError as exc:
        raise InvalidRequest(f"{command}: {_describe(exc)}") from exc
    if isinstance(req, CreateKernels):
        if len(req.kernel_ids) != len(req.configs):
            raise InvalidRequest("create_kernels: kernel_ids and configs differ in length")
        if len(set(req.kernel_ids)) != len(req.kernel_ids):
            raise InvalidRequest("create_kernels: kernel_ids repeat an id")
    return req


def is_valid_id(value: str) -> bool:
    return bool(_ID.match(value))
