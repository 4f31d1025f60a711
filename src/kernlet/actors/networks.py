"""The agent actor's hands for session networks: carries out what the
:class:`~kernlet.actors.network_book.NetworkBook` decides (docs/sessions.md).

- make: the bridge network (labelled with the agent, the session and its owner), the
  session's ssh keypair in ``<var>/sessions/<network>/``, then ``network_created`` recorded
  on the agent stream, then the joins answered;
- remove: the network, the key dir, then ``network_removed`` recorded, then the leaves
  answered;
- orphans (the reconciler: a network of this agent that the book does not know, older than
  ``agent.orphan-grace``) are removed the same way with reason ``orphan``.

Runs in the agent actor's thread; the Docker calls run on the loop (``spawn``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from kernlet.actors.messages import JoinNetwork, LeaveNetwork
from kernlet.actors.network_book import Action, Answer, Make, NetworkBook, Remove
from kernlet.cluster import CLUSTER_KEY, new_keypair
from kernlet.config import AgentConfig
from kernlet.drivers.container_runtime import LABEL_AGENT, LABEL_SESSION
from kernlet.events import KernelState, NetworkCreated, NetworkRemoved

if TYPE_CHECKING:
    from kernlet.actors.agent import AgentActor
    from kernlet.actors.reconcile import OrphanNetwork

__all__ = ["KEY_NAME", "LABEL_NETWORK_OWNER", "Networks", "session_dir"]

log = logging.getLogger(__name__)

#: label of a session network: who removes it ("agent" after its last kernel, or "manager")
LABEL_NETWORK_OWNER = "ai.kernlet.network-owner"
#: the session's private key in its key dir (the public key beside it, ``.pub``)
KEY_NAME = "id_ed25519"


def session_dir(cfg: AgentConfig, network: str) -> Path:
    """Where a session network's keypair lives on the host (root only)."""
    return cfg.agent.var_dir / "sessions" / network


def _write_keys(path: Path, comment: str) -> None:
    if (path / KEY_NAME).exists():
        return
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, public = new_keypair(comment)
    fd = os.open(path / KEY_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    (path / f"{KEY_NAME}.pub").write_bytes(public)


class Networks:
    """The book and its effects; only the agent actor calls it."""

    def __init__(self, agent: AgentActor) -> None:
        self.agent = agent
        self.book = NetworkBook()
        self._orphans: set[str] = set()

    # -- from messages and commands ------------------------------------------------------

    def handle(self, msg: JoinNetwork | LeaveNetwork) -> None:
        if isinstance(msg, JoinNetwork):
            internal = self.agent.ctx.cfg.container.network != "bridge"
            self.run(self.book.join(msg.network, msg.kernel_id, msg.session_id, internal,
                                    msg.ssh, msg.reply, msg.owner, msg.members))
        else:
            self.run(self.book.leave(msg.network, msg.kernel_id, msg.reply))

    def restore(self, states: Iterable[KernelState], owned: Iterable[str]) -> None:
        """Recovery, before any command: the manager's networks from the log, then every
        live kernel of a session holds its network."""
        for network in owned:
            self.book.adopt_owned(network)
        for state in states:
            facts = state.config.get(CLUSTER_KEY) or {}
            if facts.get("network") and facts.get("owner") == "manager":
                self.book.adopt_owned(facts["network"])
            if facts.get("network"):
                self.book.restore(facts["network"], state.kernel_id, state.session_id,
                                  bool(facts.get("ssh")))

    # -- carrying out --------------------------------------------------------------------

    def run(self, actions: Iterable[Action]) -> None:
        for action in actions:
            match action:
                case Answer():
                    if action.error is not None:
                        action.reply.error(action.error)
                    else:
                        action.reply.ok(action.result)
                case Make():
                    self._spawn_make(action)
                case Remove():
                    self._spawn_remove(action)

    def _spawn_make(self, a: Make) -> None:
        ctx = self.agent.ctx
        labels = {LABEL_AGENT: ctx.cfg.agent.id, LABEL_SESSION: a.session_id,
                  LABEL_NETWORK_OWNER: a.owner}
        keys = session_dir(ctx.cfg, a.network)

        async def make() -> None:
            log.info("making network %s (session %s)", a.network, a.session_id or "-")
            await ctx.docker.ensure_network(a.network, a.internal, labels)
            await asyncio.to_thread(_write_keys, keys, f"kernlet-{a.network}")
            await ctx.record_agent(NetworkCreated(network=a.network, session_id=a.session_id,
                                                  owner=a.owner))

        self.agent.spawn(make(), then=lambda _: self.run(self.book.made(a.network, None)),
                         fail=lambda err: self._make_failed(a, err))

    def _make_failed(self, a: Make, err: BaseException) -> None:
        log.warning("network %s could not be made: %s", a.network, err)
        self.run(self.book.made(a.network, err))  # its joins fail; what exists is removed

    def _spawn_remove(self, a: Remove, book: bool = True) -> None:
        ctx = self.agent.ctx
        keys = session_dir(ctx.cfg, a.network)

        async def remove() -> None:
            await ctx.docker.remove_network(a.network)
            await asyncio.to_thread(shutil.rmtree, keys, True)
            await ctx.record_agent(NetworkRemoved(network=a.network, reason=a.reason,
                                                  session_id=a.session_id))
            log.info("network %s removed (%s)", a.network, a.reason)

        def done(err: BaseException | None) -> None:
            self._orphans.discard(a.network)
            if err is not None:
                log.warning("network %s not removed: %s", a.network, err)
            if book:
                self.run(self.book.removed(a.network, err))
            elif a.reason == "orphan" and err is None:
                self.book.forget(a.network)

        self.agent.spawn(remove(), then=lambda _: done(None), fail=done)

    def remove_orphan(self, orphan: OrphanNetwork) -> None:
        if orphan.network in self._orphans or orphan.network in self.book.known():
            return
        self._orphans.add(orphan.network)
        log.warning("removing orphan network %s (session %s)", orphan.network,
                    orphan.session_id or "?")
        self._spawn_remove(Remove(orphan.network, orphan.session_id, "orphan"), book=False)
