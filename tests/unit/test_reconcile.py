"""The relist plan: differences between the registry and Docker, with an injected clock."""

from __future__ import annotations

from kernlet.actors.reconcile import Died, Missing, Orphan, plan
from kernlet.drivers.docker import LABEL_KERNEL, ContainerInfo
from kernlet.events import (
    ContainerCreated,
    KernelCreating,
    KernelPreparing,
    KernelStarted,
    KernelState,
    KernelTerminated,
    new_envelope,
    replay,
)

NOW = 1_000_000.0
GRACE = 60.0


def kernel(kid: str, container: str, *, started: bool = True,
           terminated: bool = False) -> KernelState:
    bodies = [KernelPreparing(session_id="s", image="i"), KernelCreating(),
              ContainerCreated(container_id=container)]
    if started:
        bodies.append(KernelStarted(container_id=container))
    if terminated:
        bodies.append(KernelTerminated(reason="user-requested", exit_code=0))
    state = replay(new_envelope(kid, i + 1, b) for i, b in enumerate(bodies))
    assert state is not None
    return state


def container(cid: str, kid: str, *, running: bool = True, exit_code: int | None = None,
              age: float = 3600.0, oom: bool = False) -> ContainerInfo:
    return ContainerInfo(id=cid, name=f"kernlet.{kid}", running=running,
                         status="running" if running else "exited", exit_code=exit_code,
                         oom_killed=oom, labels={LABEL_KERNEL: kid}, created=NOW - age)


def test_all_in_agreement_means_nothing_to_do() -> None:
    states = {"k1": kernel("k1", "c1")}
    assert plan(states, [container("c1", "k1")], NOW, GRACE) == []


def test_a_running_kernels_container_exited() -> None:
    states = {"k1": kernel("k1", "c1")}
    got = plan(states, [container("c1", "k1", running=False, exit_code=137, oom=True)],
               NOW, GRACE)
    assert got == [Died("k1", "c1", 137, True)]


def test_a_running_kernels_container_vanished() -> None:
    assert plan({"k1": kernel("k1", "c1")}, [], NOW, GRACE) == [Missing("k1", "c1")]


def test_kernels_on_their_way_up_are_left_to_their_actor() -> None:
    states = {"k1": kernel("k1", "c1", started=False)}
    # not started yet, container exited or missing or another one: no action
    assert plan(states, [], NOW, GRACE) == []
    assert plan(states, [container("c1", "k1", running=False, exit_code=1)], NOW, GRACE) == []
    assert plan(states, [container("c0", "k1", age=10_000)], NOW, GRACE) == []


def test_orphans_only_after_the_grace_period() -> None:
    young = container("c9", "ghost", age=GRACE - 1)
    old = container("c8", "ghost", running=False, exit_code=0, age=GRACE + 1)
    done = kernel("k2", "c7", terminated=True)
    leftover = container("c7", "k2", age=GRACE + 5)
    got = plan({"k2": done}, [young, old, leftover], NOW, GRACE)
    assert got == [Orphan("c8", "ghost", 0), Orphan("c7", "k2", None)]


def test_a_stale_container_of_a_running_kernel_is_an_orphan() -> None:
    states = {"k1": kernel("k1", "c1")}
    got = plan(states, [container("c1", "k1"), container("c0", "k1", age=GRACE * 2)],
               NOW, GRACE)
    assert got == [Orphan("c0", "k1", None)]


def test_a_kernel_taken_from_the_pool_owns_the_pool_kernels_labelled_container() -> None:
    """(docs/pool.md) The container still carries the pool kernel's label; the recorded
    container id says whose it is: no orphan, and its death is the taker's."""
    states = {"k1": kernel("k1", "c1")}  # the pool kernel pool-1 is gone from the registry
    assert plan(states, [container("c1", "pool-1")], NOW, GRACE) == []
    got = plan(states, [container("c1", "pool-1", running=False, exit_code=1)], NOW, GRACE)
    assert got == [Died("k1", "c1", 1, False)]
