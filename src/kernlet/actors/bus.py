"""Loop side of the manager protocol: NATS requests in, typed replies out.

Each request is decoded (size-capped), validated against its schema, handed to the agent actor
with ``tell`` and a :class:`Reply`, and answered when that reply completes. An ``execute`` for
a registered, live kernel goes straight to that kernel's actor (one thread hop fewer on the
hot path); any other, and one whose kernel the registry does not hold, goes through the agent
actor, which answers the errors. Nothing here blocks the loop, and no failure of one request
reaches another.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import pykka

from kernlet import logs
from kernlet.actors.flow import Flows, OutputFlow
from kernlet.actors.messages import Command, RecordAgentEvent, RunCode
from kernlet.actors.reply import Reply
from kernlet.drivers.nats import NatsDriver, Request
from kernlet.errors import BusError, InternalError, InvalidRequest, KernletError
from kernlet.events import AgentError, CodecError, pack, unpack
from kernlet.protocol import COMMANDS, AckOutput, Execute, command_subject, parse_request

__all__ = ["CommandServer"]

log = logging.getLogger(__name__)

#: Bytes of a streaming execute's output published between two flushes: the agent waits for
#: NATS to take them before it publishes more, so a lagging NATS holds back the run (see
#: RunBook) instead of piling up in the client's outgoing buffer.
STREAM_WINDOW = 1024 * 1024


class CommandServer:
    def __init__(
        self,
        bus: NatsDriver,
        agent: pykka.ActorRef[Any],
        prefix: str,
        agent_id: str,
        max_request: int,
        max_code: int,
        observe: Callable[[str, str | None, float], None] | None = None,
        kernels: Mapping[str, pykka.ActorRef[Any]] | None = None,
    ) -> None:
        self._bus = bus
        self._agent = agent
        #: the agent actor's registry of kernel actors, read only (AgentContext.kernel_refs)
        self._kernels: Mapping[str, pykka.ActorRef[Any]] = {} if kernels is None else kernels
        self._prefix = prefix
        self._agent_id = agent_id
        self._max = max_request
        self._max_code = max_code
        #: told (command, error type or None, seconds) once each request is answered
        self._observe = observe
        self.handled = 0
        self.errors = 0
        #: credit of the streaming calls that asked for flow control (see actors/flow.py)
        self.flows = Flows()

    async def start(self) -> None:
        await self._bus.serve(command_subject(self._prefix, self._agent_id, "*"), self.handle)

    async def handle(self, req: Request) -> None:
        """Answer one request (on a task of its own: ids bound here stay with it)."""
        command = req.subject.rsplit(".", 1)[-1]
        started = time.perf_counter()
        error: str | None = None
        try:
            body: dict[str, Any] = {"ok": True, "result": await self._dispatch(command, req)}
        except KernletError as exc:
            self.errors += 1
            body = {"ok": False, "error": exc.to_wire()}
            error = str(body["error"].get("type") or type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - never let one request kill the server
            self.errors += 1
            error = InternalError.__name__
            trace = traceback.format_exc()
            log.error("request %s failed: %s", command, trace)
            body = {"ok": False, "error": InternalError(f"{type(exc).__name__}: {exc}").to_wire()}
            try:
                self._agent.tell(RecordAgentEvent(AgentError(
                    message=f"{command}: {type(exc).__name__}: {exc}", traceback=trace)))
            except pykka.ActorDeadError:
                pass
        self.handled += 1
        if self._observe is not None:
            known = command if command in COMMANDS else "unknown"  # bounded label values
            self._observe(known, error, time.perf_counter() - started)
        if req.reply:
            try:
                await self._bus.publish(req.reply, pack(body))
            except (BusError, CodecError) as exc:
                log.warning("could not reply to %s: %s", command, exc)

    def _to_kernel(self, req: Execute, reply: Reply, sink: Any) -> bool:
        """Tell the kernel's actor directly, as the agent actor would (it checks that the
        kernel can run code); False when the registry has no live actor for it."""
        ref = self._kernels.get(req.kernel_id)
        if ref is None or not ref.is_alive():
            return False
        try:
            ref.tell(RunCode(req, reply, sink))
        except pykka.ActorDeadError:
            return False
        return True

    async def _dispatch(self, command: str, req: Request) -> Any:
        try:
            payload = unpack(req.data, max_size=self._max)
        except CodecError as exc:
            raise InvalidRequest(f"{command}: {exc}") from exc
        parsed = parse_request(command, payload)
        logs.bind(kernel_id=getattr(parsed, "kernel_id", None) or None,
                  run_id=getattr(parsed, "run_id", None) or None)
        if isinstance(parsed, AckOutput):  # answered here: output never passes an actor
            return {"applied": self.flows.ack(parsed.kernel_id, parsed.run_id,
                                              parsed.received)}
        if isinstance(parsed, Execute) and len(parsed.code.encode()) > self._max_code:
            raise InvalidRequest(
                f"execute: code of {len(parsed.code.encode())} bytes exceeds the limit "
                f"of {self._max_code} bytes"
            )
        reply = Reply.new(asyncio.get_running_loop())
        sink = None
        flow: OutputFlow | None = None
        if isinstance(parsed, Execute) and parsed.stream and req.reply:
            inbox = req.reply
            unflushed = 0
            if parsed.credit is not None:
                flow = self.flows.open(parsed.kernel_id, parsed.run_id, parsed.credit)

            async def sink(items: list[list[Any]]) -> None:
                nonlocal unflushed
                data = pack({"ok": True, "output": items})
                if flow is not None:
                    await flow.wait()  # the caller's window is full: hold the run back
                    flow.published(len(data))
                await self._bus.publish(inbox, data)
                unflushed += len(data)
                if unflushed >= STREAM_WINDOW:
                    unflushed = 0
                    await self._bus.flush()

        try:
            if not (isinstance(parsed, Execute) and self._to_kernel(parsed, reply, sink)):
                try:
                    self._agent.tell(Command(parsed, reply, sink))
                except pykka.ActorDeadError as exc:
                    raise InternalError("the agent actor is not running") from exc
            return await reply.future
        finally:
            if flow is not None and isinstance(parsed, Execute):
                self.flows.close(parsed.kernel_id, parsed.run_id, flow)
