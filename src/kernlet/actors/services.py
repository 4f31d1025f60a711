"""Starting and stopping a kernel's in-container services (Jupyter, the web terminal...).

The image declares its services' ports (label ``ai.kernlet.service-ports``); at create each got
a host port on 127.0.0.1 (see the kernel's ``service_ports``). ``start_service`` runs the
service's command (``kernlet/runner/services.json``) in the container with ``docker exec``, as
the kernel's user, with a fresh token, then waits until it answers on its host port. Loop-side
coroutines, called by the agent actor through ``spawn``.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp

from kernlet.actors.steps import home_dirs
from kernlet.config import AgentConfig
from kernlet.drivers.container_runtime import ContainerRuntime
from kernlet.errors import AgentTimeout, InvalidRequest
from kernlet.events import KernelState
from kernlet.layout import WORK_IN_CONTAINER
from kernlet.runner.services import (
    ServiceDef,
    launch_argv,
    load_service_defs,
    new_token,
    stop_argv,
)

__all__ = ["shutdown_service", "start_service"]

READY_TIMEOUT = 60.0


def _lookup(state: KernelState, name: str) -> tuple[ServiceDef, dict[str, Any]]:
    ports = {str(p["name"]): p for p in state.info.get("service_ports", [])}
    if name not in ports:
        declared = ", ".join(sorted(ports)) or "none"
        raise InvalidRequest(f"kernel {state.kernel_id} has no service {name!r} "
                             f"(its image declares: {declared})")
    defs = load_service_defs()
    if name not in defs:
        raise InvalidRequest(f"no definition for service {name!r} in this agent")
    return defs[name], ports[name]


async def _answers(url: str) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http, \
                http.get(url, allow_redirects=False) as resp:
            return resp.status < 500
    except (aiohttp.ClientError, TimeoutError):
        return False


async def start_service(
    docker: ContainerRuntime, cfg: AgentConfig, state: KernelState, name: str
) -> dict[str, Any]:
    """Start (or find running) service ``name``; its URL once it answers."""
    svc, port = _lookup(state, name)
    host_port = int(port["host_port"])
    token_file = home_dirs(cfg, state).ipc / f"svc-{name}.token"
    if token_file.exists():  # started before: is it still up?
        token = token_file.read_text().strip()
        if await _answers(svc.ready_url(host_port, token)):
            return _result(svc, name, host_port, token)
    token = new_token()
    await asyncio.to_thread(_write_secret, token_file, token)
    argv = svc.argv(port=int(port["container_port"]), token=token, workdir=WORK_IN_CONTAINER)
    c = cfg.container
    await docker.exec(
        state.container_id, launch_argv(name, argv), user=f"{c.kernel_uid}:{c.kernel_gid}",
        workdir=WORK_IN_CONTAINER,
        env=svc.environ(port=int(port["container_port"]), token=token,
                        workdir=WORK_IN_CONTAINER),
    )
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    while not await _answers(svc.ready_url(host_port, token)):
        if asyncio.get_running_loop().time() > deadline:
            raise AgentTimeout(f"service {name} of kernel {state.kernel_id} did not answer on "
                               f"port {host_port} within {READY_TIMEOUT:.0f} s")
        await asyncio.sleep(0.2)
    return _result(svc, name, host_port, token)


def _write_secret(path: Path, token: str) -> None:
    path.write_text(token)
    path.chmod(0o600)


def _result(svc: ServiceDef, name: str, host_port: int, token: str) -> dict[str, Any]:
    return {"name": name, "url": svc.user_url(host_port, token), "host_port": host_port,
            "token": token}


async def shutdown_service(
    docker: ContainerRuntime, cfg: AgentConfig, state: KernelState, name: str
) -> dict[str, Any]:
    """Stop service ``name`` (SIGTERM, then SIGKILL after 5 s)."""
    _lookup(state, name)
    c = cfg.container
    code = await docker.exec(state.container_id, stop_argv(name),
                             user=f"{c.kernel_uid}:{c.kernel_gid}", wait=15.0)
    with contextlib.suppress(FileNotFoundError):
        (home_dirs(cfg, state).ipc / f"svc-{name}.token").unlink()
    if code == 3:
        raise InvalidRequest(f"service {name} of kernel {state.kernel_id} is not running")
    return {"name": name, "stopped": True}
