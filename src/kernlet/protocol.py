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
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from kernlet.cluster import plan_cluster
from kernlet.errors import InvalidRequest, UnknownCommand

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

KernelId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def command_subject(prefix: str, agent_id: str, command: str) -> str:
    return f"{prefix}.agent.{agent_id}.cmd.{command}"


def heartbeat_subject(prefix: str, agent_id: str) -> str:
    return f"{prefix}.heartbeat.{agent_id}"


def events_subject(prefix: str, agent_id: str, stream: str, event_type: str) -> str:
    return f"{prefix}.events.{agent_id}.{stream}.{event_type}"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


SlotName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$",
                                            max_length=64)]


class Mount(_Request):
    """One storage mount: a directory under a storage root (``[storage] roots``), bound into
    the kernel. Checked against the roots by :mod:`kernlet.drivers.storage`."""

    #: ``"root:relative/path"`` (``"root:"`` or ``"root:."`` is the root itself)
    source: Annotated[str, StringConstraints(min_length=2, max_length=4096)]
    #: where it appears: a path under /home/work (not /home/work itself)
    target: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    mode: Literal["ro", "rw"] = "rw"


class KernelConfig(_Request):
    """How to create one kernel."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    #: CPU cores (fractions allowed); None = agent default
    cpu: Annotated[float, Field(gt=0, le=1024)] | None = None
    #: memory limit in bytes; None = agent default
    mem: Annotated[int, Field(ge=16 * 1024**2)] | None = None
    #: other resource slots (e.g. {"cuda.device": 1}), all or nothing with cpu and mem;
    #: amounts as numbers or decimal strings. Slot names, amounts and this node's capacity
    #: are checked before anything is created (InvalidRequest / InsufficientResource)
    slots: Annotated[dict[SlotName, int | float | str], Field(max_length=32)] = Field(
        default_factory=dict)
    #: bytes of /dev/shm, at most ``mem``; None = ``container.shm-size``
    shm_size: Annotated[int, Field(ge=1024**2)] | None = None
    environ: dict[str, str] = Field(default_factory=dict)
    #: shell script run once in /home/work before the runtime starts
    bootstrap: Annotated[str, StringConstraints(max_length=64 * 1024)] = ""
    #: storage mounts (see :class:`Mount`)
    mounts: Annotated[list[Mount], Field(max_length=64)] = Field(default_factory=list)

    @field_validator("slots")
    @classmethod
    def _not_cpu_or_mem(cls, v: dict[str, Any]) -> dict[str, Any]:
        both = sorted({"cpu", "mem"} & set(v))
        if both:
            raise ValueError(f"{', '.join(both)}: set by the fields of that name, not in slots")
        return v
    #: container ports to publish now for servers the user starts later (host ports from
    #: the port pool, all or nothing with the service ports; in the create result)
    preopen_ports: Annotated[list[Annotated[int, Field(ge=1, le=65535)]],
                             Field(max_length=16)] = Field(default_factory=list)


class Ping(_Request):
    msg: str = ""


HostName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
NetworkName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]


class ClusterSpec(_Request):
    """The kernels of one create_kernels call as one session on a network of its own
    (docs/sessions.md). Lists are in ``kernel_ids`` order."""

    #: "single-node": a bridge network on this agent; "multi-node" is designed (Docker overlay
    #: networks, docs/sessions.md) and refused by this agent
    mode: Literal["single-node", "multi-node"] = "single-node"
    #: each kernel's role; default: the first "main", the others "sub"
    roles: list[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]{0,15}$")]] | None = None
    #: each kernel's hostname; default: role + index within the role (main1, sub1, sub2...)
    hostnames: list[HostName] | None = None
    #: give the session an ssh keypair and run an ssh server in each kernel
    ssh: bool = True
    #: attach to this network made by create_local_network (the manager owns it); "": the
    #: agent makes one for the session and removes it after its last kernel
    network: NetworkName | Literal[""] = ""


class CreateKernels(_Request):
    session_id: KernelId
    kernel_ids: Annotated[list[KernelId], Field(min_length=1, max_length=64)]
    configs: Annotated[list[KernelConfig], Field(min_length=1, max_length=64)]
    #: make the kernels one session on its own network (None: each on the default bridge)
    cluster: ClusterSpec | None = None


class CreateLocalNetwork(_Request):
    """Make a bridge network that the manager owns (kernels join it by ``cluster.network``;
    it stays until destroy_local_network)."""

    network: NetworkName


class DestroyLocalNetwork(_Request):
    network: NetworkName


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


class CheckAndPull(_Request):
    image: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    #: seconds the pull may take (the reference's default: 2 hours)
    timeout: Annotated[float, Field(gt=0, le=24 * 3600)] = 7200.0


#: a repository name: ``[host[:port]/]path`` in lower case (Docker's rule)
Repository = Annotated[str, StringConstraints(
    pattern=r"^[a-z0-9][a-z0-9._-]*(:[0-9]{1,5})?(/[a-z0-9][a-z0-9._-]*)+$|^[a-z0-9][a-z0-9._-]*$",
    max_length=200)]
Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]
#: an image name: repository, ``repository:tag`` or an image id
ImageName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,255}$")]


class CommitKernel(_Request):
    """Commit the running kernel's container to the new image ``image:tag`` (background;
    image_commit_started / image_commit_finished)."""

    kernel_id: KernelId
    image: Repository
    tag: Tag = "latest"


class GetCommitStatus(_Request):
    """A commit's status by its id, or the latest commit of ``kernel_id``."""

    commit_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] | None = None
    kernel_id: KernelId | None = None


class PushImage(_Request):
    """Push a local image to ``registry`` (``host:port``; default: the one its name names)
    with the credentials of ``[registries]`` (background; image_push_progress, image_pushed)."""

    image: ImageName
    registry: Annotated[str, StringConstraints(
        pattern=r"^([A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?)?$", max_length=255)] = ""


class PurgeImages(_Request):
    """Remove local images no live kernel uses (``force``: also those only stopped
    containers use; never one a live kernel runs)."""

    images: Annotated[list[ImageName], Field(min_length=1, max_length=256)]
    force: bool = False


class ListImages(_Request):
    """The node's kernel images: id, tags, repo digests, size, labels (a fresh rescan)."""


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
