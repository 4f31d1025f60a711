"""Hook ``mounts``: pin the kernel's storage mounts (``KernelConfig.mounts``) on their staging
points, so that the container binds exactly the directories that were checked (see
:mod:`kernlet.drivers.storage`, TOCTOU).

Nothing new is recorded: the mounts as asked are in ``kernel_preparing``'s config, and the
staging points follow from the kernel id and the mount's index, so a restart, a recovery and
the undo know them from the log alone. A restart keeps the pins (it redoes the hooks from
``container`` on). Undo: detach the pins and remove the staging points (never recursively)."""

from __future__ import annotations

import asyncio

from kernlet.actors.hooks.base import BaseHook, HookEnv
from kernlet.drivers import storage

__all__ = ["MountsHook"]


class MountsHook(BaseHook):
    name = "mounts"
    #: its work runs in a thread, which a cancel would not stop: the undo could run first
    cancellable = False

    async def up(self, env: HookEnv) -> list[storage.MountPlan]:
        cfg = env.ctx.cfg
        plans = storage.plan_mounts(cfg.storage.roots, env.state.config.get("mounts") or [])
        if plans:
            await asyncio.to_thread(storage.pin, cfg.agent.var_dir, env.kernel_id,
                                    cfg.storage.roots, plans)
        return plans

    async def down(self, env: HookEnv) -> None:
        await asyncio.to_thread(storage.unpin, env.ctx.cfg.agent.var_dir, env.kernel_id)
