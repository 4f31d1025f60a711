"""Hook ``container``: create the kernel's container (not started), under the creation slots.

Its record, ``container_created``, puts the id in the log before the container starts. A
destroy never cancels a create in flight (the container would exist, unknown to the log); it
waits for it. Undo: stop (grace, then kill), keep the container's last output
(:mod:`kernlet.actors.kept_logs`), and remove every container labelled with the kernel (strays
of earlier tries too) and its recorded one (a kernel taken from the warm pool runs in a
container labelled with the pool kernel); its fact is the exit code seen."""

from __future__ import annotations

import contextlib

from kernlet.actors import kept_logs, steps
from kernlet.actors.hooks.base import BaseHook, HookEnv
from kernlet.actors.hooks.network import session_spec
from kernlet.drivers.docker import LABEL_AGENT, LABEL_KERNEL
from kernlet.errors import ContainerNotFound
from kernlet.events import ContainerCreated, EventBody

__all__ = ["ContainerHook", "port_map", "preopen_ports"]


class ContainerHook(BaseHook):
    name = "container"
    cancellable = False

    async def up(self, env: HookEnv) -> str:
        spec = steps.container_spec(env.ctx.cfg, env.state,
                                    steps.home_dirs(env.ctx.cfg, env.state), port_map(env),
                                    env.ctx.cuda)
        spec = session_spec(spec, env)
        async with env.ctx.create_slots:
            return await steps.create_container(env.ctx.docker, spec)

    def record(self, env: HookEnv, fact: str) -> EventBody:
        return ContainerCreated(container_id=fact)

    async def down(self, env: HookEnv) -> int | None:
        docker, cfg = env.ctx.docker, env.ctx.cfg
        container = env.state.container_id or env.facts.get("container", "")
        exit_code: int | None = None
        if container:
            with contextlib.suppress(ContainerNotFound):
                info = await docker.inspect(container)
                if info.running:
                    await docker.stop(container, cfg.container.stop_grace)
                    info = await docker.inspect(container)
                exit_code = info.exit_code
                await kept_logs.keep(cfg, docker, env.kernel_id, container)
        listed = await docker.list({LABEL_KERNEL: env.kernel_id, LABEL_AGENT: cfg.agent.id})
        for other in listed:
            if exit_code is None and other.id == container:
                exit_code = other.exit_code
            await docker.remove(other.id)
        if container and container not in {c.id for c in listed}:
            # a kernel taken from the warm pool: its container carries the pool kernel's label
            with contextlib.suppress(ContainerNotFound):
                await docker.remove(container)
        return exit_code


def port_map(env: HookEnv) -> dict[int, int]:
    """Container port -> host port: the image's declared services and the ports ``allocate``
    gave (create), or the kernel's recorded service ports (restart, recovery)."""
    image = env.facts.get("pull")
    if image is not None and env.state.ports:
        cports = [sp.port for sp in image.service_ports] + preopen_ports(env)
        return dict(zip(cports, env.state.ports, strict=True))
    return {int(p["container_port"]): int(p["host_port"])
            for p in env.state.info.get("service_ports", [])}


def preopen_ports(env: HookEnv) -> list[int]:
    """The container ports the create asked to publish for the user's own servers."""
    return [int(p) for p in env.state.config.get("preopen_ports") or ()]
