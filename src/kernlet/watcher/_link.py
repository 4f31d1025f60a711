"""The watcher's way into the agent actor: the same path as a NATS request.

A request from :mod:`kernlet.protocol` goes to the agent actor as ``Command(request, reply)``
with ``tell``; the coroutine then awaits the reply's loop future. Nothing blocks the loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pykka

from kernlet.actors.messages import Command
from kernlet.actors.reply import Reply
from kernlet.errors import AgentTimeout, InternalError, KernelNotFound, KernelNotRunning
from kernlet.protocol import DestroyKernel, ListKernels, Ping
from kernlet.watcher._handle import AgentHandle

__all__ = ["RESET_REASON", "AgentLink"]

#: the reason recorded on every kernel destroyed by ``POST /agent/reset``
RESET_REASON = "agent-reset"


class AgentLink:
    """Asks the agent actor things from the loop. Every method runs on the loop."""

    def __init__(self, handle: AgentHandle, destroy_timeout: float = 60.0) -> None:
        self._handle = handle
        self._destroy_timeout = destroy_timeout

    async def ask(self, request: Any, timeout: float) -> Any:
        """Send one protocol request to the agent actor; its result, or its typed error."""
        agent = self._handle.agent
        if agent is None:
            raise InternalError("the agent actor is not running")
        reply = Reply.new(asyncio.get_running_loop())
        try:
            agent.tell(Command(request, reply))
        except pykka.ActorDeadError as exc:
            raise InternalError("the agent actor is not running") from exc
        try:
            return await asyncio.wait_for(reply.future, timeout)
        except TimeoutError as exc:
            name = type(request).__name__
            raise AgentTimeout(f"the agent did not answer {name} within {timeout:g} s") from exc

    async def ping(self, timeout: float = 2.0) -> dict[str, Any]:
        result: dict[str, Any] = await self.ask(Ping(msg="watcher"), timeout)
        return result

    async def kernels(self, *, all: bool, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Kernel summaries: live ones from the agent's registry, or every one in the log."""
        result = await self.ask(ListKernels(all=all), timeout)
        kernels: list[dict[str, Any]] = result["kernels"]
        return kernels

    async def destroy(self, kernel_id: str, reason: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.ask(
            DestroyKernel(kernel_id=kernel_id, reason=reason), self._destroy_timeout
        )
        return result

    async def reset(self) -> dict[str, Any]:
        """Destroy every live kernel at once; which were destroyed, which failed and why."""
        live = [k["id"] for k in await self.kernels(all=False)]
        outcomes = await asyncio.gather(
            *(self.destroy(kid, RESET_REASON) for kid in live), return_exceptions=True
        )
        destroyed: list[str] = []
        failed: dict[str, dict[str, str]] = {}
        for kid, outcome in zip(live, outcomes, strict=True):
            if isinstance(outcome, (KernelNotFound, KernelNotRunning)):
                destroyed.append(kid)  # it ended on its own meanwhile: the goal is reached
            elif isinstance(outcome, BaseException):
                failed[kid] = {"type": type(outcome).__name__, "message": str(outcome)}
            else:
                destroyed.append(kid)
        return {"destroyed": sorted(destroyed), "failed": failed}
