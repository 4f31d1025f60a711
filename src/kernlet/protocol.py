"""The manager protocol over NATS: subjects, request schemas, reply shapes.

Subjects (``P`` is the configured prefix, ``kernlet`` by default; ``A`` the agent id)::

    P.agent.A.cmd.<command>        request-reply: msgpack map of arguments
    P.events.A.<kernel_id|_agent>.<event_type>
                                   lifecycle and agent events (msgpack event map; header
                                   Nats-Msg-Id = event id; JetStream stream named by
                                   nats.stream-name, KERNLET_EVENTS by default)
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

from pydantic import (
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from kernlet.cluster import plan_cluster
from kernlet.errors import InvalidRequest, UnknownCommand
from kernlet.protocol_base import KernelId
from kernlet.protocol_base import Request as _Request
from kernlet.protocol_create import (
    ClusterSpec,
    CreateKernels,
    CreateLocalNetwork,
    DestroyLocalNetwork,
    KernelConfig,
    Mount,
)
from kernlet.protocol_images import (
    CheckAndPull,
    CommitKernel,
    GetCommitStatus,
    ListImages,
    PurgeImages,
    PushImage,
)

__all__ = [
    "COMMANDS",
    "LOOP_COMMANDS",
    "AckOutput",
    "CheckAndPull",
    "ClusterSpec",
    "CommitKernel",
    "CreateKernels",
    "CreateLocalNetwork",
    "DebugFault",
    "DestroyKernel",
    "DestroyLocalNetwork",
    "DownloadFile",
    "Execute",
    "GatherHwinfo",
    "GetCommitStatus",
    "GetCompletions",
    "GetEvents",
    "GetLogs",
    "InterruptKernel",
    "KernelConfig",
    "ListFiles",
    "ListImages",
    "ListKernels",
    "Mount",
    "Ping",
    "PurgeImages",
    "PushImage",
    "ResetAgent",
    "RestartKernel",
    "ShutdownService",
    "StartService",
    "SyncKernelRegistry",
    "TriggerBatchExecution",
    "UploadFile",
    "command_subject",
    "events_subject",
    "heartbeat_subject",
    "is_valid_id",
    "json_schema",
    "parse_request",
]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def command_subject(prefix: str, agent_id: str, command: str) -> str:
    return f"{prefix}.agent.{agent_id}.cmd.{command}"


def heartbeat_subject(prefix: str, agent_id: str) -> str:
    return f"{prefix}.heartbeat.{agent_id}"


def events_subject(prefix: str, agent_id: str, stream: str, event_type: str) -> str:
    return f"{prefix}.events.{agent_id}.{stream}.{event_type}"


class Ping(_Request):
    msg: str = ""


class DestroyKernel(_Request):
    kernel_id: KernelId
    session_id: str = ""
    reason: Annotated[str, StringConstraints(max_length=128)] = "user-requested"


class RestartKernel(_Request):
    kernel_id: KernelId
    session_id: str = ""


#: ``opts.output`` of a query execute: absent, the reference's console shape, or Jupyter's.
OUTPUT_SHAPES = (None, "console", "jupyter")


class Execute(_Request):
    kernel_id: KernelId
    session_id: str = ""
    run_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    mode: Literal["query", "batch", "input", "continue"] = "query"
    code: str = ""
    #: batch mode: {"clean": str, "build": str, "exec": str}; query mode: {"output":
    #: "console" (default, the reference's console items) | "jupyter" (iopub message types),
    #: "stdin": "allow" (default: input() waits for an input call) | "refuse" (it raises)}
    opts: dict[str, str | None] = Field(default_factory=dict)
    #: seconds to collect output before answering "continued"; None: until finished/input
    flush_timeout: Annotated[float, Field(gt=0, le=3600)] | None = None
    #: stream output as it is produced to the reply inbox before the final reply
    stream: bool = False
    #: seconds the run may take; then it is interrupted and answered "exec-timeout"
    timeout: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None
    #: streaming flow control: bytes of output messages the caller may have unacknowledged
    #: (``ack_output``); None: no flow control
    credit: Annotated[int, Field(ge=64 * 1024, le=1024**3)] | None = None

    @model_validator(mode="after")
    def _output_shape(self) -> Execute:
        if self.mode == "query" and self.opts.get("output") not in OUTPUT_SHAPES:
            raise ValueError(f"opts.output must be one of {', '.join(OUTPUT_SHAPES[1:])}")
        if self.mode == "query" and self.opts.get("stdin") not in (None, "allow", "refuse"):
            raise ValueError("opts.stdin must be one of allow, refuse")
        return self


class AckOutput(_Request):
    """A streaming caller processed ``received`` bytes of output message bodies of its
    current ``execute`` call of ``run_id`` (cumulative). Published without a reply inbox."""

    kernel_id: KernelId
    run_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    received: Annotated[int, Field(ge=0)]


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


Path = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class GetLogs(_Request):
    kernel_id: KernelId
    tail: Annotated[int, Field(ge=1, le=100_000)] = 1000
    #: only lines logged at or after this time (UTC epoch seconds)
    since: Annotated[float, Field(ge=0)] | None = None
    #: start each line with its RFC 3339 UTC time (nanoseconds) and a space
    timestamps: bool = False


class UploadFile(_Request):
    kernel_id: KernelId
    #: relative to /home/work (or absolute under it)
    path: Path
    data: bytes
    append: bool = False


class DownloadFile(_Request):
    kernel_id: KernelId
    path: Path
    offset: Annotated[int, Field(ge=0)] = 0
    length: Annotated[int, Field(ge=1, le=768 * 1024)] = 512 * 1024


class ListFiles(_Request):
    kernel_id: KernelId
    path: Path = "."


class SyncKernelRegistry(_Request):
    """The kernels the manager believes this agent runs."""

    kernel_ids: Annotated[list[KernelId], Field(max_length=100_000)]


class TriggerBatchExecution(_Request):
    kernel_id: KernelId
    session_id: str = ""
    #: shell command run in /home/work
    code: Annotated[str, StringConstraints(min_length=1)]
    timeout: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None


class GatherHwinfo(_Request):
    pass


class StartService(_Request):
    kernel_id: KernelId
    service: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]


class ShutdownService(_Request):
    kernel_id: KernelId
    service: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]


class ResetAgent(_Request):
    """Destroy every kernel of this agent (the explicit way; stopping the agent never does)."""

    reason: Annotated[str, StringConstraints(max_length=128)] = "agent-reset"


class DebugFault(_Request):
    """Make a kernel's actor raise, or the agent's root actor die (``actor = "agent"``; the
    process then exits non-zero). Only with debug.fault-injection = true."""

    kernel_id: KernelId
    actor: Literal["kernel", "agent"] = "kernel"


class GetEvents(_Request):
    kernel_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]


COMMANDS: dict[str, type[_Request]] = {
    "ping": Ping,
    "create_kernels": CreateKernels,
    "create_local_network": CreateLocalNetwork,
    "destroy_local_network": DestroyLocalNetwork,
    "destroy_kernel": DestroyKernel,
    "restart_kernel": RestartKernel,
    "execute": Execute,
    "interrupt_kernel": InterruptKernel,
    "get_completions": GetCompletions,
    "list_kernels": ListKernels,
    "get_events": GetEvents,
    "reset_agent": ResetAgent,
    "get_logs": GetLogs,
    "upload_file": UploadFile,
    "download_file": DownloadFile,
    "list_files": ListFiles,
    "sync_kernel_registry": SyncKernelRegistry,
    "trigger_batch_execution": TriggerBatchExecution,
    "gather_hwinfo": GatherHwinfo,
    "check_and_pull": CheckAndPull,
    "commit_kernel": CommitKernel,
    "get_commit_status": GetCommitStatus,
    "push_image": PushImage,
    "purge_images": PurgeImages,
    "list_images": ListImages,
    "start_service": StartService,
    "shutdown_service": ShutdownService,
    "debug_fault": DebugFault,
}


#: commands the loop answers itself, never handed to the agent actor (flow control)
LOOP_COMMANDS: dict[str, type[_Request]] = {
    "ack_output": AckOutput,
}


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "(request)"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def parse_request(command: str, payload: Any) -> _Request:
    """Validate one request; raises UnknownCommand or InvalidRequest naming the bad field."""
    schema = COMMANDS.get(command) or LOOP_COMMANDS.get(command)
    if schema is None:
        known = ", ".join(sorted([*COMMANDS, *LOOP_COMMANDS]))
        raise UnknownCommand(f"unknown command {command!r}; known: {known}")
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
        for i, kc in enumerate(req.configs):
            if len(set(kc.preopen_ports)) != len(kc.preopen_ports):
                raise InvalidRequest(f"create_kernels: configs.{i}.preopen_ports repeat a port")
        if req.cluster is not None:
            plan_cluster(req.session_id, req.kernel_ids, req.cluster, "")
    if isinstance(req, GetCommitStatus) and (req.commit_id is None) == (req.kernel_id is None):
        raise InvalidRequest("get_commit_status: give commit_id or kernel_id (one of them)")
    return req


def is_valid_id(value: str) -> bool:
    return bool(_ID.match(value))


def json_schema(command: str | None = None) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the requests, generated from the models above: one
    command's, or a document with every command's request and the reply envelope."""
    if command is not None:
        if command not in COMMANDS:
            raise UnknownCommand(f"unknown command {command!r}; known: "
                                 f"{', '.join(sorted(COMMANDS))}")
        return {**COMMANDS[command].model_json_schema(), "$schema": _DRAFT, "title": command}
    defs: dict[str, Any] = {"Reply": _REPLY}
    props: dict[str, Any] = {}
    for name, model in COMMANDS.items():
        one = model.model_json_schema()
        for key, sub in one.pop("$defs", {}).items():  # refs are "#/$defs/X": hoist them
            if defs.setdefault(key, sub) != sub:
                raise AssertionError(f"two request models define {key} differently")
        props[name] = one
    return {
        "$schema": _DRAFT,
        "title": "kernlet manager protocol: request payloads by command (msgpack maps)",
        "type": "object",
        "properties": props,
        "$defs": defs,
    }


_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_REPLY: dict[str, Any] = {
    "description": "Every reply: a result, or a typed error (kernlet.errors); a streaming "
                   "execute sends output messages before it",
    "oneOf": [
        {"type": "object", "required": ["ok", "result"],
         "properties": {"ok": {"const": True}, "result": {}}},
        {"type": "object", "required": ["ok", "output"],
         "properties": {"ok": {"const": True},
                        "output": {"type": "array", "items": {"type": "array"}}}},
        {"type": "object", "required": ["ok", "error"],
         "properties": {"ok": {"const": False},
                        "error": {"type": "object", "required": ["type", "message"],
                                  "properties": {"type": {"type": "string"},
                                                 "message": {"type": "string"}}}}},
    ],
}
