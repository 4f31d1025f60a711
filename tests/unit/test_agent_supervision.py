"""The root actor never dies of one message (no Docker, no NATS).

A real AgentActor on a real loop thread over MemoryEventLog: container events, relists and
replies aimed at kernel actors that have just stopped, and a handler that raises, are all
survived; the agent keeps answering commands, and an unexpected error becomes ``agent_error``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, cast

import pykka
import pytest

from kernlet.actors.agent import AgentActor
from kernlet.actors.context import AgentContext
from kernlet.actors.loop import LoopThread
from kernlet.actors.messages import Allocate, Command, StepDone
from kernlet.actors.outbox import Outbox
from kernlet.actors.reply import Reply
from kernlet.config import AgentConfig
from kernlet.drivers.docker import LABEL_KERNEL, ContainerEvent
from kernlet.drivers.resources import Allocator
from kernlet.errors import KernelNotRunning
from kernlet.events import AGENT_STREAM, AgentError
from kernlet.protocol import DebugFault, DestroyKernel, Ping, ResetAgent
from kernlet.store.memory import MemoryEventLog


class _Stopped(pykka.ThreadingActor):
    pass


@pytest.fixture
def rig() -> Iterator[tuple[LoopThread, MemoryEventLog, pykka.ActorRef[Any]]]:
    loop = LoopThread().start()
    store = MemoryEventLog()
    loop.run(store.open())
    cfg = AgentConfig.model_validate({"debug": {"fault-injection": True}})
    ctx = AgentContext(cfg=cfg, loop=loop, store=store, docker=cast(Any, None),
                       outbox=Outbox(cast(Any, None), store, "kernlet", "a1"))
    agent = AgentActor.start(ctx, set(), Allocator([]))
    yield loop, store, agent
    pykka.ActorRegistry.stop_all()
    loop.run(store.close())
    loop.stop()


def _call(loop: LoopThread, agent: pykka.ActorRef[Any], request: Any) -> Any:
    async def ask() -> Any:
        reply = Reply.new(asyncio.get_running_loop())
        agent.tell(Command(request, reply))
        return await asyncio.wait_for(reply.future, 5)
    return loop.run(ask())


def _plant_dead_kernel(agent: pykka.ActorRef[Any], kernel_id: str) -> pykka.ActorRef[Any]:
    """A kernel actor that stopped, still in the registry (its KernelGone not yet handled)."""
    dead = _Stopped.start()
    dead.stop()
    agent.proxy().kernels.get()[kernel_id] = dead
    agent.proxy().known_ids.get().add(kernel_id)
    return dead


def _agent_errors(loop: LoopThread, store: MemoryEventLog, until: str = "") -> list[str]:
    """The agent_error messages so far; with ``until``, once one contains it (the append is
    asynchronous to the actor) or after 5 s."""
    deadline = time.monotonic() + 5
    while True:
        events = loop.run(store.read_stream(AGENT_STREAM))
        found = [e.body.message for e in events if isinstance(e.body, AgentError)]
        if not until or any(until in m for m in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_messages_for_a_stopped_kernel_actor_are_survived(rig: Any) -> None:
    loop, store, agent = rig
    dead = _plant_dead_kernel(agent, "k1")
    agent.tell(ContainerEvent("die", "c1", {LABEL_KERNEL: "k1"}, 137))
    agent.tell(Allocate("k1", {}, 0, dead))
    with pytest.raises(KernelNotRunning):
        _call(loop, agent, DestroyKernel(kernel_id="k1"))
    assert _call(loop, agent, Ping(msg="still here"))["msg"] == "still here"
    assert agent.is_alive()
    assert _agent_errors(loop, store) == []  # an expected race, not an incident


def test_reset_answers_with_a_stopped_kernel_actor_in_the_registry(rig: Any) -> None:
    loop, _, agent = rig
    _plant_dead_kernel(agent, "k3")
    assert _call(loop, agent, ResetAgent()) == {"destroyed": []}
    assert agent.is_alive()


def test_a_failing_step_is_recorded_and_survived(rig: Any) -> None:
    loop, store, agent = rig

    def boom(_: Any) -> None:
        raise ValueError("a bug in one step")

    agent.tell(StepDone(then=boom, fail=boom, result=1, error=None))
    assert _call(loop, agent, Ping(msg="x"))["msg"] == "x"
    assert agent.is_alive()
    assert any("a bug in one step" in m for m in _agent_errors(loop, store, "a bug"))


def test_injected_root_fault_kills_the_actor_and_records_it(rig: Any) -> None:
    loop, store, agent = rig
    res = _call(loop, agent, DebugFault(kernel_id="any", actor="agent"))
    assert res == {"injected": True, "actor": "agent"}
    agent.actor_stopped.wait(5)
    assert not agent.is_alive()
    assert any("agent actor died" in m for m in _agent_errors(loop, store, "died"))


def test_an_allocation_for_a_stopped_kernel_actor_holds_nothing(rig: Any) -> None:
    loop, _, agent = rig
    dead = _plant_dead_kernel(agent, "k2")
    agent.tell(Allocate("k2", {}, 2, dead))  # its answer cannot be delivered
    assert _call(loop, agent, Ping(msg="after"))["msg"] == "after"  # the Allocate is handled
    ledger = agent.proxy().ledger.get()
    assert ledger.held("k2") == (None, ())
    assert ledger.ports_held == frozenset()  # its ports went back, not only its slots
