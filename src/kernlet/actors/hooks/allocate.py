"""Hook ``allocate``: the kernel's slots (cpu, mem, its ``slots`` such as cuda.device) and host
ports, all or nothing, from the agent's resource ledger. Undo: give them back (by kernel id:
idempotent). A request this node could never give was refused before the kernel existed
(``create_kernels`` calls ``Ledger.check`` on :func:`slot_request`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kernlet.actors import steps
from kernlet.actors.hooks.base import BaseHook, HookEnv
from kernlet.actors.hooks.container import preopen_ports
from kernlet.actors.messages import Allocate, Allocated, Release
from kernlet.cluster import CLUSTER_KEY
from kernlet.config import AgentConfig
from kernlet.errors import InvalidRequest
from kernlet.layout import SSH_PORT

__all__ = ["AllocateHook", "slot_fields", "slot_request"]


def slot_request(cfg: AgentConfig, config: Mapping[str, Any]) -> dict[str, Any]:
    """Every slot a kernel's config asks for: cpu and mem (the agent's defaults when unset)
    and its ``slots`` (cuda.device...)."""
    c = cfg.container
    return {**dict(config.get("slots") or {}),
            "cpu": str(config.get("cpu") or c.default_cpu),
            "mem": str(config.get("mem") or c.default_mem)}


def slot_fields(slot: str) -> str:
    """The KernelConfig field a slot of :func:`slot_request` comes from (for errors)."""
    return slot if slot in ("cpu", "mem") else f"slots.{slot}"


class _Inbox:
    """Stands in for an actor ref in ``Allocate.reply_to``: the answer completes a future on
    the loop. An answer for a hook that was cancelled meanwhile is dropped; the teardown's
    ``down`` releases what it held."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future: asyncio.Future[Allocated] = loop.create_future()

    def tell(self, message: Allocated) -> None:  # any thread (the agent actor's)
        self._loop.call_soon_threadsafe(self._set, message)

    def _set(self, message: Allocated) -> None:
        if not self.future.done():
            self.future.set_result(message)


class AllocateHook(BaseHook):
    name = "allocate"

    async def up(self, env: HookEnv) -> tuple[Any, tuple[int, ...]]:
        request = slot_request(env.ctx.cfg, env.state.config)
        inbox = _Inbox(asyncio.get_running_loop())
        ports = len(env.facts["pull"].service_ports) if steps.publishes_ports(env.ctx.cfg) else 0
        ports += _preopen_count(env)
        env.agent.tell(Allocate(env.kernel_id, request, ports, inbox))
        answer = await inbox.future
        if answer.error is not None:
            raise answer.error
        return answer.allocation, answer.ports

    async def down(self, env: HookEnv) -> None:
        env.agent.tell(Release(env.kernel_id))


def _preopen_count(env: HookEnv) -> int:
    """How many host ports ``preopen_ports`` needs; InvalidRequest for a port the kernel's
    own servers use, or on an agent that publishes no ports."""
    preopen = preopen_ports(env)
    if not preopen:
        return 0
    if not steps.publishes_ports(env.ctx.cfg):
        raise InvalidRequest(f"preopen_ports: container.network = {env.ctx.cfg.container.network}"
                             " publishes no ports")
    taken = {sp.port: sp.name for sp in env.facts["pull"].service_ports}
    if (env.state.config.get(CLUSTER_KEY) or {}).get("ssh"):
        taken[SSH_PORT] = "ssh"
    clash = [f"{p} ({taken[p]})" for p in preopen if p in taken]
    if clash:
        raise InvalidRequest(f"preopen_ports: {', '.join(clash)} already used in the kernel")
    return len(preopen)
