"""Hook ``facts``: the kernel's config dir (``<var>/config/<kid>``, read-only at
``/home/config`` in the container) with ``kernel.json``: its ids, image, allocated slots,
cores, devices and mounts, as the log has them. :mod:`kernlet.helpers` reads it inside the
kernel.

Nothing new is recorded: the file is written from the kernel's state (``kernel_preparing``
and ``kernel_creating``), so it is the log's view, and a restart keeps it. Undo: remove the
dir."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from kernlet.actors.hooks.base import BaseHook, HookEnv
from kernlet.actors.steps import config_dir, home_id
from kernlet.events import KernelState
from kernlet.layout import CONFIG_IN_CONTAINER, FACTS_NAME

__all__ = ["FactsHook", "facts"]


def facts(state: KernelState) -> dict[str, Any]:
    """What ``kernel.json`` holds (the slots as the log records them: amounts as strings)."""
    return {
        "kernel_id": state.kernel_id,
        "session_id": state.session_id,
        "image": state.image,
        "slots": dict(state.slots),
        "cpuset": list(state.cpuset),
        "devices": {s: dict(d) for s, d in state.devices.items()},
        "mounts": [{"source": m.get("source"), "target": m.get("target"),
                    "mode": m.get("mode", "rw")}
                   for m in state.config.get("mounts") or []],
        "config_dir": CONFIG_IN_CONTAINER,
    }


def _write(path: Path, data: dict[str, Any]) -> None:
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = path / f".{FACTS_NAME}.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.chmod(0o644)
    tmp.replace(path / FACTS_NAME)


class FactsHook(BaseHook):
    name = "facts"
    #: its work runs in a thread, which a cancel would not stop: the undo could run first
    cancellable = False

    async def up(self, env: HookEnv) -> Path:
        path = config_dir(env.ctx.cfg.agent.var_dir, home_id(env.state))
        await asyncio.to_thread(_write, path, facts(env.state))
        return path

    async def down(self, env: HookEnv) -> None:
        path = config_dir(env.ctx.cfg.agent.var_dir, home_id(env.state))
        await asyncio.to_thread(shutil.rmtree, path, True)
