"""Hook ``dirs``: the kernel's scratch dir (``<var>/scratch/<kid>/work``, its /home/work; a
tmpfs or a loop-mounted image with ``container.scratch-type``/``scratch-size``) and runtime dir
(``<var>/ipc/<kid>``, its socket), owned by the kernel's uid.

Its record, ``kernel_creating``, carries what ``allocate`` gave and the scratch dir: from then
on the log holds the kernel's resources (restored from it after a crash). Undo: unmount the
scratch, remove both dirs."""

from __future__ import annotations

import asyncio
import shutil

from kernlet.actors import steps
from kernlet.actors.hooks.base import BaseHook, HookEnv
from kernlet.drivers import scratch
from kernlet.events import EventBody, KernelCreating, KernelState

__all__ = ["DirsHook", "creating_from_state"]


class DirsHook(BaseHook):
    name = "dirs"

    async def up(self, env: HookEnv) -> steps.KernelDirs:
        bootstrap = str(env.state.config.get("bootstrap") or "")
        return await steps.prepare_dirs(env.ctx.cfg, env.kernel_id, bootstrap)

    def record(self, env: HookEnv, fact: steps.KernelDirs) -> EventBody:
        alloc, ports = env.facts["allocate"]
        devices = {s: m for s, m in alloc.to_plain()["devices"].items()
                   if s not in ("cpu", "mem")}
        return KernelCreating(slots=alloc.plain_slots(), cpuset=alloc.cpuset, ports=ports,
                              scratch_dir=str(fact.scratch), devices=devices)

    async def down(self, env: HookEnv) -> None:
        dirs = steps.home_dirs(env.ctx.cfg, env.state)
        await asyncio.to_thread(shutil.rmtree, dirs.ipc, True)
        await asyncio.to_thread(scratch.unmount, dirs.work)
        await asyncio.to_thread(shutil.rmtree, dirs.scratch, True)


def creating_from_state(state: KernelState) -> KernelCreating:
    """``kernel_creating`` again for a restart: everything it held, devices included."""
    return KernelCreating(slots=dict(state.slots), cpuset=state.cpuset, ports=state.ports,
                          scratch_dir=state.scratch_dir, devices=dict(state.devices))
