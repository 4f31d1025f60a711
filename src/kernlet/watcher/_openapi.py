"""The watcher's HTTP API as an OpenAPI 3.0 document, served at /openapi.json: the paths are
listed here, every schema is generated from the pydantic models of kernlet.watcher._schemas.

A unit test checks that it names exactly the routes the app serves; schemathesis checks, against
a live agent, that the answers match it.
"""

from __future__ import annotations

import copy
from typing import Any

from kernlet import __version__
from kernlet.watcher._schemas import openapi_components

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


#: generated from the response models (kernlet.watcher._schemas), never written here
_SCHEMAS: dict[str, Any] = openapi_components()

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
        "responses": {"200": _json(_ref("UsageHistory"), "The samples, oldest first"),
                      "400": _error("kernel_id is not a valid kernel id")},
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
