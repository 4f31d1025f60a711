"""Hook ``runtime``: start the container and wait for the in-container runtime to answer on
its socket (``agent.create-timeout``; its error names the key and carries the container's
last output). The Docker start holds a creation slot; the runtime's
boot does not (a create of more kernels than slots would run in waves).

Its record, ``kernel_started``, carries what the manager is told (ports, runtime version,
create seconds). Undo: close the runtime channel (waiting callers get KernelNotRunning)."""

from __future__ import annotations

import time
from typing import Any

from kernlet.actors.create_errors import connect_runtime
from kernlet.actors.hooks.base import BaseHook, HookEnv
from kernlet.actors.hooks.container import preopen_ports
from kernlet.events import EventBody, KernelStarted

__all__ = ["RuntimeHook"]


class RuntimeHook(BaseHook):
    name = "runtime"

    async def up(self, env: HookEnv) -> dict[str, Any]:
        async with env.ctx.create_slots:
            await env.ctx.docker.start(env.state.container_id)
        return await connect_runtime(env.runs.channel, env.ctx.docker, env.state.container_id,
                                     env.ctx.cfg.agent.create_timeout)

    def record(self, env: HookEnv, fact: dict[str, Any]) -> EventBody:
        s, cfg = env.state, env.ctx.cfg
        image = env.facts.get("pull")
        service_ports = [
            {"name": sp.name, "protocol": sp.protocol, "container_port": sp.port,
             "host_port": hp}
            for sp, hp in zip(image.service_ports if image else (), s.ports, strict=False)
        ]
        if image is not None:
            service_ports += [
                {"name": f"preopen-{cp}", "protocol": "preopen", "container_port": cp,
                 "host_port": hp}
                for cp, hp in zip(preopen_ports(env), s.ports[len(image.service_ports):],
                                  strict=False)]
        service_ports = service_ports or list(s.info.get("service_ports", []))
        info = {
            "id": env.kernel_id,
            "session_id": s.session_id,
            "agent_id": cfg.agent.id,
            "host": cfg.advertised_host,
            "container_id": s.container_id,
            "image": s.image,
            "resource_spec": dict(s.slots),
            "devices": {slot: list(m) for slot, m in s.devices.items()},
            "service_ports": service_ports,
            "scratch_dir": s.scratch_dir,
            "runtime": {k: fact.get(k) for k in ("runtime", "version")},
            "create_seconds": round(time.monotonic() - env.started, 3),
        }
        return KernelStarted(container_id=s.container_id, info=info)

    async def down(self, env: HookEnv) -> None:
        await env.runs.close(env.reason or "terminated")
