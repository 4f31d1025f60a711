"""The watcher's HTTP answers as pydantic models: the single source of ``/openapi.json``'s
``components.schemas`` (turned into OpenAPI 3.0 by :func:`openapi_components`).

The handlers build plain dicts (cheap, on the loop); these models describe them, and the unit
and schemathesis tests check that the answers match. A field without a default is required;
``X | None`` is OpenAPI's ``nullable``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from kernlet.events import State

__all__ = ["MODELS", "openapi_components"]

Count = Annotated[int, Field(ge=0)]
Point = Annotated[list[float], Field(min_length=3, max_length=3)]


class _Model(BaseModel):
    pass


class ErrorBody(_Model):
    type: str
    message: str


class Error(_Model):
    error: ErrorBody


class Check(_Model):
    ok: bool
    detail: str


class Health(_Model):
    ok: bool
    checks: dict[str, Check]


class Usage(_Model):
    """A live kernel's last usage sample (null when none)."""

    container_id: str
    cpu_seconds: float
    #: cores busy over the last sample (1.0: one full core)
    cpu_ratio: float
    memory_bytes: Count


class Kernel(_Model):
    id: str
    session_id: str
    state: State
    image: str
    container_id: str
    slots: dict[str, str]
    executions: Count
    created_at: float
    updated_at: float
    reason: str
    exit_code: int | None
    usage: Usage | None


class Event(_Model):
    id: str
    kernel_id: str
    seq: Annotated[int, Field(ge=1)]
    time: float
    type: str
    version: Annotated[int, Field(ge=1)]
    payload: dict[str, Any]
    state: State


class KernelList(_Model):
    kernels: list[Kernel]


class KernelDetail(Kernel):
    live: bool
    events: Annotated[list[Event], Field(min_length=1)]


class StatusAgent(_Model):
    id: str
    version: str
    region: str
    scaling_group: str
    hostname: str
    started_at: float
    uptime_seconds: float


class StatusResources(_Model):
    capacity: dict[str, float]
    used: dict[str, float]
    free: dict[str, float]


class StatusHost(_Model):
    cpu_count: Count
    cpu_ratio: float
    mem_total: Count
    mem_available: Count


class StatusKernels(_Model):
    live: Count
    total: Count
    by_state: dict[str, Count]


class StatusEventLog(_Model):
    events: Count
    bytes: Count
    undelivered: Count


class StatusNats(_Model):
    connected: bool
    published: Count
    last_error: str


class Status(_Model):
    agent: StatusAgent
    resources: StatusResources
    host: StatusHost | None
    kernels: StatusKernels
    event_log: StatusEventLog
    nats: StatusNats
    heartbeat_age_seconds: float | None
    reconcile_age_seconds: float | None
    loop_lag_seconds: float
    usage: dict[str, Usage]


class UsageHistory(_Model):
    window: float
    #: [time, host cpu busy share 0..1, host memory used bytes]
    node: list[Point]
    #: kernel id -> [time, cores busy, memory bytes]
    kernels: dict[str, list[Point]]


class DestroyRequest(_Model):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=128)] = "operator-requested"


class DestroyResult(_Model):
    id: str
    reason: str
    exit_code: int | None


class ResetResult(_Model):
    destroyed: list[str]
    failed: dict[str, ErrorBody]


class Accepted(_Model):
    ok: bool
    message: str


MODELS: tuple[type[BaseModel], ...] = (
    Error, Check, Health, Usage, Kernel, Event, KernelList, KernelDetail, Status,
    UsageHistory, DestroyRequest, DestroyResult, ResetResult, Accepted,
)


def openapi_components() -> dict[str, Any]:
    """``components.schemas`` in OpenAPI 3.0 terms, from :data:`MODELS`: ``$ref`` into the
    components, ``X | None`` as ``nullable`` (on the referenced schema for a ref), no
    titles."""
    _, doc = models_json_schema([(m, "serialization") for m in MODELS],
                                ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = doc["$defs"]
    nullable_refs: set[str] = set()
    out = {name: _to_openapi(s, nullable_refs) for name, s in schemas.items()}
    for name in nullable_refs:
        out[name]["nullable"] = True
    return out


def _to_openapi(node: Any, nullable_refs: set[str]) -> Any:
    if isinstance(node, list):
        return [_to_openapi(n, nullable_refs) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in ("title", "description")}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options and len(options) == 2:
        (other,) = [o for o in options if o != {"type": "null"}]
        del node["anyOf"]
        if "$ref" in other:
            nullable_refs.add(other["$ref"].rsplit("/", 1)[-1])
            node.update(other)
        else:
            node.update(other, nullable=True)
    return {k: _to_openapi(v, nullable_refs) for k, v in node.items()}
