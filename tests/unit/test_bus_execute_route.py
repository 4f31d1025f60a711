"""The command server hands an ``execute`` for a registered, live kernel straight to that
kernel's actor; everything else (an unknown kernel, a stopped actor, other commands) goes
through the agent actor as before."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pykka
import pytest

from kernlet.actors.bus import CommandServer
from kernlet.actors.messages import Command, RunCode
from kernlet.drivers.nats import Request
from kernlet.events import pack

KID = "k" + uuid.uuid4().hex[:8]


class Recorder(pykka.ThreadingActor):
    """Answers every request with who got it and how."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RunCode):
            message.reply.ok({"by": self.name, "as": "RunCode",
                              "kernel": message.request.kernel_id})
        elif isinstance(message, Command):
            message.reply.ok({"by": self.name, "as": "Command",
                              "what": type(message.request).__name__})


@pytest.fixture
def actors() -> Any:
    agent = Recorder.start("agent")
    kernel = Recorder.start("kernel")
    yield agent, kernel
    pykka.ActorRegistry.stop_all()


def server(agent: Any, kernels: dict[str, Any]) -> CommandServer:
    return CommandServer(None, agent, "kernlet", "a1", 1024**2, 1024**2,  # type: ignore[arg-type]
                         kernels=kernels)


def request(command: str, **args: Any) -> Request:
    return Request(f"kernlet.agent.a1.{command}", pack(args), "")


async def dispatch(srv: CommandServer, command: str, **args: Any) -> Any:
    return await asyncio.wait_for(srv._dispatch(command, request(command, **args)), 10)


async def test_execute_for_a_live_registered_kernel_goes_to_its_actor(actors: Any) -> None:
    agent, kernel = actors
    got = await dispatch(server(agent, {KID: kernel}), "execute", kernel_id=KID, run_id="r1",
                         code="1")
    assert got == {"by": "kernel", "as": "RunCode", "kernel": KID}


async def test_execute_for_an_unregistered_kernel_goes_to_the_agent(actors: Any) -> None:
    agent, kernel = actors
    got = await dispatch(server(agent, {KID: kernel}), "execute", kernel_id="other",
                         run_id="r1", code="1")
    assert got == {"by": "agent", "as": "Command", "what": "Execute"}


async def test_execute_for_a_stopped_kernel_actor_goes_to_the_agent(actors: Any) -> None:
    agent, kernel = actors
    kernel.stop()
    got = await dispatch(server(agent, {KID: kernel}), "execute", kernel_id=KID, run_id="r1",
                         code="1")
    assert got == {"by": "agent", "as": "Command", "what": "Execute"}


async def test_other_commands_for_a_registered_kernel_go_to_the_agent(actors: Any) -> None:
    agent, kernel = actors
    got = await dispatch(server(agent, {KID: kernel}), "interrupt_kernel", kernel_id=KID)
    assert got == {"by": "agent", "as": "Command", "what": "InterruptKernel"}


async def test_the_registry_is_read_when_each_request_comes(actors: Any) -> None:
    agent, kernel = actors
    registry: dict[str, Any] = {}
    srv = server(agent, registry)
    first = await dispatch(srv, "execute", kernel_id=KID, run_id="r1", code="1")
    registry[KID] = kernel  # the agent actor registered the kernel meanwhile
    second = await dispatch(srv, "execute", kernel_id=KID, run_id="r2", code="1")
    assert (first["by"], second["by"]) == ("agent", "kernel")
