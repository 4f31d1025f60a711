"""The watcher's HTTP API as an OpenAPI 3.0 document, written by hand and served at /openapi.json.

A unit test checks that it names exactly the routes the app serves; schemathesis checks, against
a live agent, that the answers match it.
"""

from __future__ import annotations

import copy
from typing import Any

from kernlet import __version__
from kernlet.events import State

__all__ = ["KERNEL_ID_PATTERN", "openapi_spec"]

#: the protocol's kernel id rule (kernlet.protocol.KernelId)
KERNEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

_NUM = {"type": "number"}
_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    out["required"] = sorted(props) if required is None else required
    return out


_POINTS = {"type": "array", "items": {"type": "array", "items": _NUM, "minItems": 3,
                                       "maxItems": 3}}

_SCHEMAS: dict[str, Any] = {
    "UsageHistory": _obj({
        "window": _NUM,
        "node": _POINTS,
        "kernels": {"type": "object", "additionalProperties": _POINTS},
    }),
    "Error": _obj({
        "error": _obj({"type": _STR, "message": _STR}),
    }),
    "Check": _obj({"ok": {"type": "boolean"}, "detail": _STR}),
    "Health": _obj({
        "ok": {"type": "boolean"},
        "checks": {"type": "object", "additionalProperties": _ref("Check")},
    }),
    "Usage": {**_obj({
        "container_id": _STR,
        "cpu_seconds": _NUM,
        "cpu_ratio": _NUM,
        "memory_bytes": _INT,
    }), "nullable": True},
    "Kernel": _obj({
        "id": _STR,
        "session_id": _STR,
        "state": {"type": "string", "enum": [s.value for s in State]},
        "image": _STR,
        "container_id": _STR,
        "slots": {"type": "object", "additionalProperties": _STR},
        "executions": _INT,
        "created_at": _NUM,
        "updated_at": _NUM,
        "reason": _STR,
        "exit_code": {"type": "integer", "nullable": True},
        "usage": _ref("Usage"),
    }),
    "Event": _obj({
        "id": _STR,
        "kernel_id": _STR,
        "seq": {"type": "integer", "minimum": 1},
        "time": _NUM,
        "type": _STR,
        "version": {"type": "integer", "minimum": 1},
        "payload": {"type": "object"},
        "state": {"type": "string", "enum": [s.value for s in State]},
    }),
    "KernelList": _obj({"kernels": {"type": "array", "items": _ref("Kernel")}}),
    "KernelDetail": {
        "allOf": [
            _ref("Kernel"),
            _obj({
                "live": {"type": "boolean"},
                "events": {"type": "array", "items": _ref("Event"), "minItems": 1},
            }),
        ]
    },
    "Status": _obj({
        "agent": _obj({
            "id": _STR, "version": _STR, "region": _STR, "scaling_group": _STR,
            "hostname": _STR, "started_at": _NUM, "uptime_seconds": _NUM,
        }),
        "resources": _obj({
            "capacity": {"type": "object", "additionalProperties": _NUM},
            "used": {"type": "object", "additionalProperties": _NUM},
            "free": {"type": "object", "additionalProperties": _NUM},
        }),
        "host": {**_obj({
            "cpu_count": _INT, "cpu_ratio": _NUM, "mem_total": _INT, "mem_available": _INT,
        }), "nullable": True},
        "kernels": _obj({
            "live": _INT,
            "total": _INT,
            "by_state": {"type": "object", "additionalProperties": _INT},
        }),
        "event_log": _obj({"events": _INT, "bytes": _INT, "undelivered": _INT}),
        "nats": _obj({"connected": {"type": "boolean"}, "published": _INT, "last_error": _STR}),
        "heartbeat_age_seconds": {"type": "number", "nullable": True},
        "reconcile_age_seconds": {"type": "number", "nullable": True},
        "loop_lag_seconds": _NUM,
        "usage": {"type": "object", "additionalProperties": _ref("Usage")},
    }),
    "DestroyRequest": {
        "type": "object",
        "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 128}},
        "additionalProperties": False,
    },
    "DestroyResult": _obj({
        "id": _STR,
        "reason": _STR,
        "exit_code": {"type": "integer", "nullable": True},
    }),
    "ResetResult": _obj({
        "destroyed": {"type": "array", "items": _STR},
        "failed": {"type": "object", "additionalProperties": _obj({"type": _STR, "message": _STR})},
    }),
    "Accepted": _obj({"ok": {"type": "boolean"}, "message": _STR}),
}

_AUTH_ERRORS = {
    "401": _error("The X-Kernlet-Token header is missing"),
    "403": _error("Wrong token, no token configured (operations are then disabled), or a "
                  "request from a page of another origin"),
}

_KERNEL_ID = {
    "name": "kernel_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": KERNEL_ID_PATTERN},
}

_PATHS: dict[str, Any] = {
    "/healthz": {"get": {
        "operationId": "healthz",
        "summary": "Whether the loop, the agent actor, NATS, Docker and the event log answer "
                   "and the last reconcile is recent",
        "responses": {
            "200": _json(_ref("Health"), "Healthy"),
            "503": _json(_ref("Health"), "Unhealthy: the failing checks say why"),
        },
    }},
    "/status": {"get": {
        "operationId": "status",
        "summary": "Identity, uptime, resources used and free, kernels by state",
        "responses": {"200": _json(_ref("Status"), "The node's status")},
    }},
    "/metrics": {"get": {
        "operationId": "metrics",
        "summary": "Prometheus metrics (text exposition format 0.0.4)",
        "responses": {"200": {
            "description": "Metrics",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }},
    }},
    "/usage/history": {"get": {
        "operationId": "usageHistory",
        "summary": "The last minutes of usage samples: the node's [time, cpu busy share, "
                   "memory used bytes], each live kernel's [time, cores busy, memory bytes]",
        "parameters": [{"name": "kernel_id", "in": "query", "required": False,
                        "schema": {"type": "string", "pattern": KERNEL_ID_PATTERN},
                        "description": "only this kernel's samples"}],
        "responses": {"200": _json(_ref("UsageHistory"), "The samples, oldest first")},
    }},
    "/kernels": {"get": {
        "operationId": "listKernels",
        "summary": "Every kernel in the event log, live and terminated, oldest first",
        "responses": {"200": {
            **_json(_ref("KernelList"), "The kernels"),
            "links": {
                "GetFirstKernel": {
                    "operationId": "getKernel",
                    "parameters": {"kernel_id": "$response.body#/kernels/0/id"},
                },
                "DestroyFirstKernel": {
                    "operationId": "destroyKernel",
                    "parameters": {"kernel_id": "$response.body#/kernels/0/id"},
                },
            },
        }},
    }},
    "/kernels/{kernel_id}": {"get": {
        "operationId": "getKernel",
        "summary": "One kernel with its full event history from the log",
        "parameters": [_KERNEL_ID],
        "responses": {
            "200": _json(_ref("KernelDetail"), "The kernel and its events"),
            "404": _error("No such kernel in the log"),
        },
    }},
    "/kernels/{kernel_id}/destroy": {"post": {
        "operationId": "destroyKernel",
        "summary": "Destroy a live kernel (recorded with the given reason)",
        "security": [{"token": []}],
        "parameters": [_KERNEL_ID],
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": _ref("DestroyRequest")}},
        },
        "responses": {
            "200": _json(_ref("DestroyResult"), "Destroyed"),
            "400": _error("Malformed body"),
            **_AUTH_ERRORS,
            "404": _error("No such kernel"),
            "409": _error("The kernel has already terminated"),
        },
    }},
    "/agent/reset": {"post": {
        "operationId": "resetAgent",
        "summary": "Destroy every live kernel (reason agent-reset)",
        "security": [{"token": []}],
        "responses": {"200": _json(_ref("ResetResult"), "What was destroyed"), **_AUTH_ERRORS},
    }},
    "/agent/shutdown": {"post": {
        "operationId": "shutdownAgent",
        "summary": "Stop the agent; its kernels keep running and are re-adopted at next start",
        "security": [{"token": []}],
        "responses": {"202": _json(_ref("Accepted"), "The agent is stopping"), **_AUTH_ERRORS},
    }},
    "/events": {"get": {
        "operationId": "events",
        "summary": "Server-sent events: a snapshot, then kernel, agent and status events",
        "responses": {"200": {
            "description": "An endless text/event-stream",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }},
    }},
    "/openapi.json": {"get": {
        "operationId": "openapi",
        "summary": "This document",
        "responses": {"200": _json({"type": "object"}, "The OpenAPI document")},
    }},
}

_SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "kernlet watcher",
        "version": __version__,
        "description": "The operators' HTTP endpoint of one kernlet agent. Operations need the "
                       "token configured in the [watcher] section of agent.toml.",
    },
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "X-Kernlet-Token"}},
    },
}


def openapi_spec(server_url: str | None = None) -> dict[str, Any]:
    """A fresh copy of the document, with ``servers`` set when the URL is known."""
    spec = copy.deepcopy(_SPEC)
    if server_url:
        spec["servers"] = [{"url": server_url.rstrip("/")}]
    return spec
