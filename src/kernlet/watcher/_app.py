"""The watcher's aiohttp app: routes, token rules, error shapes, the event stream.

Every handler runs on the agent's loop and only awaits: the agent actor is reached through
:class:`~kernlet.watcher._link.AgentLink` (``tell`` + ``Reply``), the log through its coroutines.

Errors are JSON ``{"error": {"type", "message"}}`` with a fitting status: kernlet's typed errors
map to 400/404/409/504, anything else to 500 (and is logged). Who may run an operation is
decided by :mod:`kernlet.watcher._guard`: any request but GET and HEAD from another origin is
refused (403) before routing matters; then operations need the configured token in
``X-Kernlet-Token``: 401 without it, 403 when wrong, and 403 for everyone when no token is
configured (operations are then disabled). Every refusal is counted by reason. No CORS header is
ever sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from kernlet.errors import (
    AgentTimeout,
    InvalidRequest,
    KernelNotFound,
    KernelNotRunning,
    KernletError,
)
from kernlet.protocol import is_valid_id
from kernlet.watcher._core import WatcherCore
from kernlet.watcher._guard import (
    SAFE_METHODS,
    TOKEN_HEADER,
    Refusal,
    check_token,
    origin_refusal,
    own_origin,
    token_refusal,
)
from kernlet.watcher._live import sse
from kernlet.watcher._openapi import openapi_spec

__all__ = [
    "CORE",
    "DESTROY_REASON",
    "STATIC_DIR",
    "TOKEN_HEADER",
    "build_app",
    "check_token",
]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: the reason recorded when a destroy request names none
DESTROY_REASON = "operator-requested"
#: seconds between keep-alive comments on an idle event stream
KEEPALIVE_SECONDS = 15.0

CORE = web.AppKey("core", WatcherCore)
TOKEN = web.AppKey("token", str)
ALLOWED_ORIGINS = web.AppKey[frozenset[str]]("allowed_origins")
SHUTDOWN = web.AppKey[Callable[[str], None]]("shutdown")

_STATUS_OF: list[tuple[type[KernletError], int]] = [
    (InvalidRequest, 400),
    (KernelNotFound, 404),
    (KernelNotRunning, 409),
    (AgentTimeout, 504),
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dumps(data: Any) -> str:
    return json.dumps(data, default=str)


def _error(status: int, type_: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message}}, status=status,
                             dumps=_dumps)


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except KernletError as exc:
        status = next((code for cls, code in _STATUS_OF if isinstance(exc, cls)), 500)
        if status == 500:
            log.warning("watcher: %s %s: %s", request.method, request.path, exc)
        return _error(status, exc.type, exc.message)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # one request must not take the watcher down
        log.exception("watcher: %s %s failed", request.method, request.path)
        return _error(500, "InternalError", f"{type(exc).__name__}: {exc}")


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    if not resp.prepared:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Cache-Control", "no-store")
        if request.path == "/" or request.path.startswith("/static/"):
            resp.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            )
    return resp


def _refuse(request: web.Request, refusal: Refusal) -> web.Response:
    request.app[CORE].metrics.auth_failures.labels(refusal.reason).inc()
    log.info("watcher: %s %s from %s refused: %s", request.method, request.path, request.remote,
             refusal.reason)
    return _error(refusal.status, "Unauthorized" if refusal.status == 401 else "Forbidden",
                  refusal.message)


@web.middleware
async def _same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Any request but GET and HEAD from a page of another origin is refused, on every path."""
    if request.method not in SAFE_METHODS:
        allowed: frozenset[str] = request.app[ALLOWED_ORIGINS]
        refusal = origin_refusal(
            request.headers.get("Origin"),
            request.headers.get("Sec-Fetch-Site"),
            own_origin(request.scheme, request.host),
            allowed,
        )
        if refusal is not None:
            return _refuse(request, refusal)
    return await handler(request)


def _authorize(request: web.Request) -> web.Response | None:
    refusal = token_refusal(request.app[TOKEN] or None, request.headers.get(TOKEN_HEADER))
    return None if refusal is None else _refuse(request, refusal)


def _kernel_id(request: web.Request) -> str:
    kernel_id = request.match_info["kernel_id"]
    if not is_valid_id(kernel_id):
        raise KernelNotFound(f"no kernel {kernel_id!r} (not a valid kernel id)")
    return kernel_id


# -- read-only -----------------------------------------------------------------------------------


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _healthz(request: web.Request) -> web.Response:
    checks = await request.app[CORE].health()
    ok = all(c.ok for c in checks.values())
    body = {"ok": ok, "checks": {name: c.to_dict() for name, c in checks.items()}}
    return _ok(body, 200 if ok else 503)


async def _status(request: web.Request) -> web.Response:
    return _ok((await request.app[CORE].status()).to_dict())


async def _metrics(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body, content_type = core.metrics.render(await core.status(),
                                             request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _history(request: web.Request) -> web.Response:
    kernel_id = request.query.get("kernel_id")
    if kernel_id is not None and not is_valid_id(kernel_id):
        raise InvalidRequest(f"kernel_id: {kernel_id!r} is not a valid kernel id")
    return _ok(request.app[CORE].history.to_dict(kernel_id))


async def _kernels(request: web.Request) -> web.Response:
    return _ok({"kernels": await request.app[CORE].kernels(all=True)})


async def _kernel(request: web.Request) -> web.Response:
    kernel_id = _kernel_id(request)
    detail = await request.app[CORE].kernel(kernel_id)
    if detail is None:
        raise KernelNotFound(f"no kernel {kernel_id!r} in the event log")
    return _ok(detail)


async def _openapi(request: web.Request) -> web.Response:
    base = f"{request.scheme}://{request.host}"
    return _ok(openapi_spec(base))


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``snapshot`` first, then ``kernel``, ``agent`` and ``status``."""
    core = request.app[CORE]
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
    })
    await resp.prepare(request)
    queue = core.hub.subscribe()  # before the snapshot: nothing falls between the two
    try:
        status = await core.status()
        kernels = await core.kernels(all=True)
        await resp.write(b"retry: 2000\n\n")
        await resp.write(sse("snapshot", {"status": status.to_dict(), "kernels": kernels}))
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if item is None:
                break
            await resp.write(item)
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        core.hub.unsubscribe(queue)
    return resp


# -- operations ----------------------------------------------------------------------------------


async def _destroy_reason(request: web.Request) -> str:
    if not request.body_exists:
        return DESTROY_REASON
    raw = await request.read()
    if not raw.strip():
        return DESTROY_REASON
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object such as {\"reason\": \"...\"}")
    unknown = sorted(set(body) - {"reason"})
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(map(str, unknown))}")
    reason = body.get("reason", DESTROY_REASON)
    if not isinstance(reason, str) or not 1 <= len(reason) <= 128:
        raise InvalidRequest("reason must be a string of 1 to 128 characters")
    return reason


async def _destroy(request: web.Request) -> web.Response:
    refused = _authorize(request)
    if refused is not None:
        return refused
    kernel_id = _kernel_id(request)
    reason = await _destroy_reason(request)
    log.info("watcher: destroy %s requested by %s (reason %r)", kernel_id, request.remote, reason)
    return _ok(await request.app[CORE].link.destroy(kernel_id, reason))


async def _reset(request: web.Request) -> web.Response:
    refused = _authorize(request)
    if refused is not None:
        return refused
    log.warning("watcher: reset requested by %s: destroying every kernel", request.remote)
    return _ok(await request.app[CORE].link.reset())


async def _shutdown(request: web.Request) -> web.StreamResponse:
    refused = _authorize(request)
    if refused is not None:
        return refused
    resp = _ok({"ok": True, "message": "the agent is shutting down; its kernels keep running"},
               status=202)
    # answer first: the shutdown stops this very server
    await resp.prepare(request)
    await resp.write_eof()
    request.app[SHUTDOWN](str(request.remote or ""))
    return resp


def build_app(
    core: WatcherCore,
    token: str | None,
    shutdown: Callable[[str], None],
    allowed_origins: Iterable[str] = (),
) -> web.Application:
    """The app for one agent's watcher. ``shutdown(who)`` must not block (it hands over);
    ``allowed_origins`` are canonical (``watcher.allowed-origins``)."""
    app = web.Application(middlewares=[_headers, _errors, _same_origin],
                          client_max_size=64 * 1024)
    app[CORE] = core
    app[TOKEN] = token or ""
    app[ALLOWED_ORIGINS] = frozenset(allowed_origins)
    app[SHUTDOWN] = shutdown
    r = app.router
    r.add_get("/", _index)
    r.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    r.add_get("/healthz", _healthz)
    r.add_get("/status", _status)
    r.add_get("/metrics", _metrics)
    r.add_get("/usage/history", _history)
    r.add_get("/kernels", _kernels)
    r.add_get("/kernels/{kernel_id}", _kernel)
    r.add_post("/kernels/{kernel_id}/destroy", _destroy)
    r.add_post("/agent/reset", _reset)
    r.add_post("/agent/shutdown", _shutdown)
    r.add_get("/events", _events)
    r.add_get("/openapi.json", _openapi)
    return app
