"""The relist safety net: compare what the registry believes with what Docker shows.

Like the kubelet's PLEG, differences between the previous belief and the current observation
become lifecycle events. :func:`plan` is pure (the clock is a parameter); the agent actor acts
on its result. Docker's event stream is the fast path; this catches what it missed (an agent
that was down, a dropped stream, a container removed while nobody listened).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kernlet.drivers.docker import LABEL_KERNEL, LABEL_SESSION, ContainerInfo, NetworkInfo
from kernlet.events import KernelState, can_execute, is_live

__all__ = ["Died", "Missing", "Orphan", "OrphanNetwork", "plan", "plan_networks"]


@dataclass(frozen=True, slots=True)
class Died:
    """A running kernel's container has exited."""

    kernel_id: str
    container_id: str
    exit_code: int | None
    oom_killed: bool


@dataclass(frozen=True, slots=True)
class Missing:
    """A running kernel's container does not exist any more."""

    kernel_id: str
    container_id: str


@dataclass(frozen=True, slots=True)
class Orphan:
    """A container of this agent that no live kernel owns, older than the grace period."""

    container_id: str
    kernel_id: str
    exit_code: int | None


@dataclass(frozen=True, slots=True)
class OrphanNetwork:
    """A session network of this agent that no session holds, older than the grace period
    (e.g. made by an agent that crashed before its kernel recorded anything)."""

    network: str
    session_id: str


Action = Died | Missing | Orphan


def plan(
    states: Mapping[str, KernelState],
    containers: Iterable[ContainerInfo],
    now: float,
    grace: float,
) -> list[Action]:
    """What to do about the differences. Only running kernels are checked for death; kernels
    on their way up or down own their containers' fate themselves."""
    actions: list[Action] = []
    seen: set[str] = set()
    # a kernel taken from the warm pool runs in a container labelled with the pool kernel
    owners = {s.container_id: k for k, s in states.items() if is_live(s) and s.container_id}
    for c in containers:
        seen.add(c.id)
        kernel_id = owners.get(c.id) or c.labels.get(LABEL_KERNEL, "")
        state = states.get(kernel_id)
        if is_live(state):
            assert state is not None
            if c.id == state.container_id:
                if can_execute(state) and not c.running:
                    actions.append(Died(kernel_id, c.id, c.exit_code, c.oom_killed))
                continue
            if not can_execute(state):
                continue  # on its way up or down: the kernel's actor owns its containers
        if now - c.created >= grace:
            actions.append(Orphan(c.id, kernel_id, c.exit_code))
    for kernel_id, state in states.items():
        if can_execute(state) and state.container_id and state.container_id not in seen:
            actions.append(Missing(kernel_id, state.container_id))
    return actions


def plan_networks(
    known: set[str], networks: Iterable[NetworkInfo], now: float, grace: float,
) -> list[OrphanNetwork]:
    """This agent's networks that the network book does not know (no live kernel holds them,
    the manager does not own them), once older than ``grace``."""
    return [OrphanNetwork(n.name, n.labels.get(LABEL_SESSION, "")) for n in networks
            if n.name not in known and now - n.created >= grace]
