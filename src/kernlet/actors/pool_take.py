"""Taking a warm-pool kernel, on the kernel side (docs/pool.md; the agent side is
:mod:`kernlet.actors.pool`).

A take hands a booted, unassigned pool kernel ``P`` over to the kernel ``X`` that a create
asked for, in one transaction of the log::

    P: kernel_handed_over(kernel_id=X)                 P is final; nothing is torn down
    X: kernel_preparing(config + {"pool": {"from": P}}) ┐ the events of an ordinary create,
    X: kernel_creating(P's slots, cores, ports...)     │ with P's holdings: the manager sees
    X: container_created(P's container)                │ a create, the log shows where it
    X: kernel_started(P's container, info + "pool": P) ┘ came from

Durable before acted on: only once the five are in the log does ``P``'s actor close its
runtime channel and the agent move ``P``'s holdings to ``X`` and start ``X``'s actor, which
rewrites ``kernel.json`` with ``X``'s ids, connects to the runtime and answers the create. A
crash before the commit leaves ``P`` in the pool; after it, ``X`` is re-adopted like any
running kernel (its dirs stay under ``P``'s name: :func:`kernlet.actors.steps.home_id`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from kernlet.actors.hooks import HookEnv
from kernlet.actors.hooks.facts import FactsHook
from kernlet.actors.steps import POOL_KEY
from kernlet.actors.work import Phase
from kernlet.events import (
    ContainerCreated,
    Envelope,
    KernelCreating,
    KernelHandedOver,
    KernelPreparing,
    KernelStarted,
    KernelState,
    apply,
    can_execute,
    new_envelope,
    replay,
)

if TYPE_CHECKING:
    from kernlet.actors.kernel import KernelActor

__all__ = ["AdoptTaken", "HandOver", "Taken", "adopt_taken", "hand_over", "taken_envelopes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HandOver:
    """To a pool kernel's actor: become ``kernel_id`` (answered with :class:`Taken`)."""

    #: the kernel id the create asked for
    kernel_id: str
    session_id: str
    #: the create's validated config (KernelConfig.model_dump())
    config: dict[str, Any]
    #: the create's per-kernel answer
    done: Callable[[dict[str, Any]], None]
    #: time.monotonic() when the create asked (for the reply's create_seconds)
    asked: float


@dataclass(frozen=True, slots=True)
class Taken:
    """To the agent: the outcome of a :class:`HandOver`. ``state`` is None when the pool
    kernel could not be taken (busy, stopping, gone): the create takes the cold path."""

    pool_id: str
    request: HandOver
    #: the pool kernel's final state and the taker's first, once both are durable
    pool_state: KernelState | None = None
    state: KernelState | None = None
    why: str = ""


@dataclass(frozen=True, slots=True)
class AdoptTaken:
    """To the taker's new actor: finish the take and answer the create."""

    done: Callable[[dict[str, Any]], None]


def taken_envelopes(pool: KernelState, req: HandOver, now: float | None = None,
                    seconds: float = 0.0) -> list[Envelope]:
    """The transaction of a take (see the module's docstring). Pure."""
    config = {**req.config, POOL_KEY: {"from": pool.kernel_id}}
    info = {**pool.info, "id": req.kernel_id, "session_id": req.session_id,
            "create_seconds": round(seconds, 3), "pool": pool.kernel_id}
    bodies = (
        KernelPreparing(session_id=req.session_id, image=pool.image, config=config),
        KernelCreating(slots=dict(pool.slots), cpuset=pool.cpuset, ports=pool.ports,
                       scratch_dir=pool.scratch_dir,
                       devices={s: dict(d) for s, d in pool.devices.items()}),
        ContainerCreated(container_id=pool.container_id),
        KernelStarted(container_id=pool.container_id, info=info),
    )
    return [new_envelope(pool.kernel_id, pool.seq + 1,
                         KernelHandedOver(kernel_id=req.kernel_id), now),
            *(new_envelope(req.kernel_id, i, b, now) for i, b in enumerate(bodies, 1))]


def hand_over(k: KernelActor, msg: HandOver) -> None:
    """In the pool kernel's actor: write the take, close this channel, tell the agent."""
    state = k.state
    if (state is None or not can_execute(state) or k.life.w.phase is not Phase.RUNNING
            or k.active_runs or state.current_run):
        why = state.state.value if state else "unknown"
        k.agent.tell(Taken(k.kernel_id, msg, why=f"pool kernel {k.kernel_id} is {why}"))
        return
    envs = taken_envelopes(state, msg, seconds=time.monotonic() - msg.asked)
    k.life.w.phase = Phase.DONE  # no other step may start on this kernel from now on
    pool_state = apply(state, envs[0])
    taker = replay(envs[1:])

    def durable(_: Any) -> None:
        k.state = pool_state
        k.agent.tell(Taken(k.kernel_id, msg, pool_state, taker))
        k.stop()

    def failed(err: BaseException) -> None:  # nothing was written: it stays in the pool
        log.error("pool kernel %s: the take failed: %s", k.kernel_id, err)
        k.life.w.phase = Phase.RUNNING
        k.agent.tell(Taken(k.kernel_id, msg, why=f"the take failed: {err}"))

    async def take() -> None:
        await k.ctx.persist_all(envs)
        await k.runs.channel.close()  # the taker's actor connects anew

    k.spawn(take(), then=durable, fail=failed)


def adopt_taken(k: KernelActor, msg: AdoptTaken) -> None:
    """In the taker's actor (started with its durable state): ``kernel.json`` with its own
    ids, the runtime channel, then the create's answer. A failure here is a failed create
    (recorded and torn down like one)."""
    life, state = k.life, k.state
    assert state is not None
    life.w.phase, life.w.create_done, life.w.t0 = Phase.RUNNING, msg.done, time.monotonic()
    env = HookEnv(kernel_id=k.kernel_id, ctx=k.ctx, agent=k.agent, runs=k.runs, state=state,
                  facts=MappingProxyType({}))
    timeout = k.ctx.cfg.agent.create_timeout

    async def finish() -> None:  # (side by side: the file is written in a thread)
        await asyncio.gather(FactsHook().up(env),
                             asyncio.wait_for(k.runs.connect(timeout=timeout), timeout))

    def ready(_: Any) -> None:
        log.info("kernel %s taken from the pool (%s)", k.kernel_id,
                 state.config.get(POOL_KEY, {}).get("from"))
        life.answer_create({"ok": True, **state.info})

    # a destroy meanwhile cancels it and tears the kernel down; a failure is a failed create
    life.step("pool-take", finish(), then=ready)
