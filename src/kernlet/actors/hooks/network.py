"""Hook ``network``: a session's kernel holds its session's network (docs/sessions.md).

For a kernel created with a cluster description (its facts in ``config["cluster"]``, recorded
by ``kernel_preparing``), ``up`` asks the agent's network book to hold the session's network,
which the book makes once for all the session's kernels, however many create at once; then it
installs the session's ssh keypair for the kernel's user (``/home/work/.ssh``) and writes
``cluster.json`` into the kernel's runtime dir. The container hook then attaches the container
to that network with its hostname and aliases (:func:`session_spec`).

Nothing is recorded by the kernel: its facts are in its ``kernel_preparing`` already, and after
a crash the agent rebuilds the book's holders from them. Undo: let go of the network (the last
holder's undo returns once the network is removed). A kernel of no cluster skips both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

from kernlet.actors import steps
from kernlet.actors.hooks.base import BaseHook, HookEnv
from kernlet.actors.messages import JoinNetwork, LeaveNetwork
from kernlet.actors.networks import KEY_NAME, session_dir
from kernlet.actors.reply import Reply
from kernlet.cluster import CLUSTER_KEY, cluster_env, cluster_json, ssh_config
from kernlet.drivers.container_runtime import ContainerSpec
from kernlet.errors import InvalidRequest
from kernlet.layout import CLUSTER_JSON_NAME

__all__ = ["NetworkHook", "facts_of", "session_spec"]


def facts_of(env: HookEnv) -> dict[str, Any]:
    return dict(env.state.config.get(CLUSTER_KEY) or {})


class NetworkHook(BaseHook):
    name = "network"

    async def up(self, env: HookEnv) -> str:
        facts = facts_of(env)
        if not facts:
            return ""
        if env.ctx.cfg.container.network == "none":
            raise InvalidRequest("create_kernels: cluster: this agent runs kernels without a "
                                 "network (container.network = none)")
        reply = Reply.new(asyncio.get_running_loop())
        env.agent.tell(JoinNetwork(env.kernel_id, facts["network"], env.state.session_id,
                                   facts["owner"], bool(facts["ssh"]), reply,
                                   tuple(h["kernel_id"] for h in facts["hosts"])))
        await reply.future
        keys = session_dir(env.ctx.cfg, facts["network"])
        await asyncio.to_thread(_install, env, facts, keys)
        return str(facts["network"])

    async def down(self, env: HookEnv) -> None:
        facts = facts_of(env)
        if not facts:
            return
        reply = Reply.new(asyncio.get_running_loop())
        env.agent.tell(LeaveNetwork(env.kernel_id, facts["network"], reply))
        await reply.future


def _install(env: HookEnv, facts: dict[str, Any], keys: Path) -> None:
    """cluster.json in the runtime dir; with ssh, ~/.ssh with the session's key, its public
    key authorized, and the session's hosts in its config; all owned by the kernel's user."""
    cfg = env.ctx.cfg
    uid, gid = cfg.container.kernel_uid, cfg.container.kernel_gid
    dirs = steps.home_dirs(cfg, env.state)
    files: dict[Path, bytes] = {dirs.ipc / CLUSTER_JSON_NAME: cluster_json(facts).encode()}
    if facts.get("ssh"):
        ssh = dirs.work / ".ssh"
        if ssh.is_symlink():
            raise InvalidRequest(f"kernel {env.kernel_id}: /home/work/.ssh is a symlink")
        ssh.mkdir(mode=0o700, exist_ok=True)
        os.chown(ssh, uid, gid)
        public = (keys / f"{KEY_NAME}.pub").read_bytes()
        files |= {ssh / KEY_NAME: (keys / KEY_NAME).read_bytes(),
                  ssh / f"{KEY_NAME}.pub": public,
                  ssh / "authorized_keys": public,
                  ssh / "config": ssh_config(facts).encode()}
    for path, data in files.items():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chown(path, uid, gid)


def session_spec(spec: ContainerSpec, env: HookEnv) -> ContainerSpec:
    """The container of a session's kernel: on the session's network, with its hostname,
    its hostname and kernel id as aliases, and the session's environment."""
    facts = facts_of(env)
    if not facts:
        return spec
    return dataclasses.replace(
        spec, network=str(facts["network"]), hostname=str(facts["host"]),
        aliases=(str(facts["host"]), env.kernel_id), env={**spec.env, **cluster_env(facts)})
