"""The agent's book of session networks: who holds each one, and when it is made or removed.

Kernels of a session are created concurrently, each by its own actor, yet the session's
network must be made once and removed once, after its last kernel. So the network belongs to
no kernel: this book, kept by the agent actor alone (like the resource ledger), counts its
holders and decides. It is pure: every call returns the actions to carry out (:class:`Make`,
:class:`Remove`, :class:`Answer`), and the outcome of a make or a remove comes back through
:meth:`NetworkBook.made` / :meth:`NetworkBook.removed`. The agent actor executes them
(:mod:`kernlet.actors.networks`). Per network::

              join (first)            made(ok)
    (none) ───────────────► MAKING ───────────► READY ◄──────────────┐
       ▲                      │                 │ last holder leaves │ removed, with
       │    made(err): joins  └───────────────► ▼                    │ joins waiting:
       └──── removed ◄──────── fail, removed ── REMOVING ────────────┘ make again

- A join while MAKING waits for the make; a join while REMOVING (the last kernel's destroy
  racing a new create) waits for the removal, after which the network is made again.
- A leave of the last holder answers once the network is gone (a destroy returns with the
  network removed); any other leave answers at once. Leaves and joins are idempotent.
- A network the manager owns (create_local_network) is never removed for lack of holders.
- After an agent crash the book is rebuilt from the log before any command: every live
  kernel whose config names a network holds it (:meth:`restore`), and the manager's networks
  come from ``network_created``/``network_removed`` on the agent stream (:func:`owned`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kernlet.errors import InvalidRequest, KernletError
from kernlet.events import Envelope, NetworkCreated, NetworkRemoved

__all__ = ["Answer", "Make", "NetworkBook", "Remove", "owned"]

MAKING, READY, REMOVING = "making", "ready", "removing"


@dataclass(frozen=True, slots=True)
class Make:
    network: str
    session_id: str
    owner: str
    internal: bool
    ssh: bool


@dataclass(frozen=True, slots=True)
class Remove:
    network: str
    session_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Answer:
    #: an actors.reply.Reply or anything with ok(result) / error(err)
    reply: Any
    error: BaseException | None = None
    result: Any = None


Action = Make | Remove | Answer


@dataclass
class _Net:
    session_id: str
    owner: str
    internal: bool
    ssh: bool
    phase: str
    holders: set[str] = field(default_factory=set)
    #: replies waiting for the network to be ready (joins, a create_local_network)
    joins: list[Any] = field(default_factory=list)
    #: replies waiting for it to be gone (the last leave, a destroy_local_network)
    leaves: list[Any] = field(default_factory=list)
    #: kernels of the create that made it, not joined yet
    members: set[str] = field(default_factory=set)


class NetworkBook:
    """Session networks and their holders; only the agent actor calls it."""

    def __init__(self) -> None:
        self._nets: dict[str, _Net] = {}
        #: network -> (why it could not be made, the kernels of its create not yet told):
        #: a kernel of that create joining later fails too (one session, one outcome)
        self._failed: dict[str, tuple[BaseException, set[str]]] = {}

    # -- queries -------------------------------------------------------------------------

    def known(self) -> set[str]:
        return set(self._nets)

    def owner(self, network: str) -> str | None:
        net = self._nets.get(network)
        return net.owner if net is not None else None

    def holders(self, network: str) -> set[str]:
        net = self._nets.get(network)
        return set(net.holders) if net is not None else set()

    def phase(self, network: str) -> str | None:
        net = self._nets.get(network)
        return net.phase if net is not None else None

    # -- kernels -------------------------------------------------------------------------

    def join(self, network: str, kernel_id: str, session_id: str, internal: bool, ssh: bool,
             reply: Any, owner: str = "agent", members: Iterable[str] = ()) -> list[Action]:
        """``members``: the kernels created with this one (they share a failed make)."""
        failed = self._failed.get(network)
        if failed is not None and kernel_id in failed[1]:
            failed[1].discard(kernel_id)
            if not failed[1]:
                del self._failed[network]
            return [Answer(reply, failed[0])]
        net = self._nets.get(network)
        if net is None:
            if owner != "agent":
                return [Answer(reply, InvalidRequest(
                    f"network {network!r} is not one of this agent's (create_local_network)"))]
            self._failed.pop(network, None)  # a new create: its own try
            self._nets[network] = _Net(session_id, "agent", internal, ssh, MAKING, {kernel_id},
                                       [reply], members=set(members) - {kernel_id})
            return [Make(network, session_id, "agent", internal, ssh)]
        if net.session_id and session_id != net.session_id and net.owner == "agent":
            return [Answer(reply, InvalidRequest(
                f"network {network!r} belongs to session {net.session_id!r}"))]
        net.holders.add(kernel_id)
        net.members.discard(kernel_id)
        if net.phase == READY:
            return [Answer(reply)]
        if net.phase == REMOVING and net.owner != "agent":
            net.holders.discard(kernel_id)
            return [Answer(reply, InvalidRequest(f"network {network!r} is being destroyed"))]
        net.joins.append(reply)
        return []

    def leave(self, network: str, kernel_id: str, reply: Any) -> list[Action]:
        net = self._nets.get(network)
        if net is None:
            return [Answer(reply)]
        net.holders.discard(kernel_id)
        if net.holders or net.owner != "agent":
            return [Answer(reply)]
        net.leaves.append(reply)
        if net.phase == READY:
            net.phase = REMOVING
            return [Remove(network, net.session_id, "last-kernel-gone")]
        return []  # MAKING: removed once made; REMOVING: answered once gone

    def restore(self, network: str, kernel_id: str, session_id: str, ssh: bool) -> None:
        """Recovery: a live kernel of the log holds ``network`` (assumed to exist)."""
        net = self._nets.setdefault(network, _Net(session_id, "agent", False, ssh, READY))
        net.holders.add(kernel_id)

    # -- the manager's own networks ------------------------------------------------------

    def create_owned(self, network: str, internal: bool, reply: Any) -> list[Action]:
        net = self._nets.get(network)
        if net is not None and net.owner != "manager":
            return [Answer(reply, InvalidRequest(
                f"network {network!r} is the agent's network of session {net.session_id!r}"))]
        if net is not None and net.phase == READY:
            return [Answer(reply, result={"network": network, "created": False})]
        if net is not None:
            net.joins.append(reply)
            return []
        self._nets[network] = _Net("", "manager", internal, True, MAKING, set(), [reply])
        return [Make(network, "", "manager", internal, True)]

    def destroy_owned(self, network: str, reply: Any) -> list[Action]:
        net = self._nets.get(network)
        if net is None or net.owner != "manager":
            return [Answer(reply, InvalidRequest(
                f"destroy_local_network: no network {network!r} made by create_local_network"))]
        if net.holders:
            return [Answer(reply, InvalidRequest(
                f"destroy_local_network: network {network!r} is held by kernel(s) "
                f"{sorted(net.holders)}"))]
        net.leaves.append(reply)
        if net.phase == READY:
            net.phase = REMOVING
            return [Remove(network, "", "manager-requested")]
        return []

    def adopt_owned(self, network: str) -> None:
        """Recovery: the log says the manager made ``network`` and has not destroyed it."""
        self._nets.setdefault(network, _Net("", "manager", False, True, READY))

    # -- outcomes ------------------------------------------------------------------------

    def made(self, network: str, error: BaseException | None) -> list[Action]:
        net = self._nets.get(network)
        if net is None or net.phase != MAKING:
            return []
        joins, net.joins = net.joins, []
        if error is not None:  # whatever half of it exists is removed before any new try
            err = error if isinstance(error, KernletError) else InvalidRequest(str(error))
            if net.members:
                self._failed[network] = (err, set(net.members))
            net.holders.clear()
            net.members.clear()
            net.phase = REMOVING
            return [*(Answer(r, err) for r in joins),
                    Remove(network, net.session_id, "failed-to-create")]
        net.phase = READY
        out: list[Action] = [Answer(r, result={"network": network, "created": True})
                             for r in joins]
        if not net.holders and net.owner == "agent":  # every holder left while it was made
            net.phase = REMOVING
            out.append(Remove(network, net.session_id, "last-kernel-gone"))
        elif net.leaves and net.owner == "manager":  # destroyed while it was made
            net.phase = REMOVING
            out.append(Remove(network, "", "manager-requested"))
        return out

    def removed(self, network: str, error: BaseException | None) -> list[Action]:
        net = self._nets.get(network)
        if net is None or net.phase != REMOVING:
            return []
        leaves, net.leaves = net.leaves, []
        if error is not None:  # still there: whoever left will try again (teardown retries)
            joins, net.joins = net.joins, []
            if not net.holders and net.owner == "agent":
                del self._nets[network]  # held by nobody: the reconciler's orphan now
            else:
                net.phase = READY
            return [*(Answer(r, error) for r in leaves), *(Answer(r) for r in joins)]
        out: list[Action] = [Answer(r) for r in leaves]
        if net.holders:  # a create came while the last kernel's destroy removed it
            net.phase = MAKING
            out.append(Make(network, net.session_id, net.owner, net.internal, net.ssh))
        else:
            del self._nets[network]
        return out

    def forget(self, network: str) -> None:
        """An orphan network was removed (the reconciler): nothing held it."""
        net = self._nets.get(network)
        if net is not None and not net.holders and net.phase == READY and net.owner == "agent":
            del self._nets[network]


def owned(events: Iterable[Envelope]) -> list[str]:
    """The manager's networks that the agent stream says exist (made, not yet removed)."""
    alive: dict[str, bool] = {}
    for env in events:
        body = env.body
        if isinstance(body, NetworkCreated) and body.owner == "manager":
            alive[body.network] = True
        elif isinstance(body, NetworkRemoved):
            alive.pop(body.network, None)
    return sorted(alive)
