"""Manager-side client library: talk to one kernlet agent over NATS.

Used by the CLI, the tests and the benchmarks::

    async with KernletClient("nats://127.0.0.1:4222", agent_id="agent-1") as c:
        k = await c.create_kernel("kernlet/python:3.11")
        result = await c.run(k["id"], "print(1 + 1)", on_output=print)
        await c.destroy_kernel(k["id"])

Errors come back as the same typed exceptions the agent raised (:mod:`kernlet.errors`).
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from kernlet.client_events import EventSubscriber
from kernlet.client_images import ImageCalls
from kernlet.client_logs import follow_logs
from kernlet.drivers.nats import open_connection, reason
from kernlet.errors import (
    AgentTimeout,
    AgentUnavailable,
    InvalidRequest,
    KernletError,
    error_from_wire,
)
from kernlet.events import pack, unpack
from kernlet.protocol import command_subject

__all__ = ["DEFAULT_CREDIT", "EventSubscriber", "KernletClient"]

#: bytes of output a streaming call may have in flight to this client before the agent waits
#: for its acknowledgement (``execute`` ``credit``; docs/protocol.md, flow control)
DEFAULT_CREDIT = 8 * 1024 * 1024

OutputCallback = Callable[[str, Any], Awaitable[None] | None]
InputCallback = Callable[[dict[str, Any]], Awaitable[str | None] | str | None]


def _result(body: Any) -> Any:
    if not isinstance(body, dict):
        raise KernletError(f"malformed reply: {body!r}")
    if not body.get("ok"):
        raise error_from_wire(body.get("error"))
    return body.get("result")


class KernletClient(ImageCalls):
    """Async client for one agent. Not thread-safe; use it on one event loop. The image
    commands (pull, commit, push, purge, list) are in :class:`ImageCalls`."""

    def __init__(
        self,
        nats_url: str = "nats://127.0.0.1:4222",
        agent_id: str = "",
        prefix: str = "kernlet",
        timeout: float = 120.0,
        nc: Client | None = None,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        creds: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``user``/``password``, ``token`` or ``creds`` (a .creds file; needs nkeys)
        authenticate; ``tls`` (e.g. ``ssl.create_default_context(cafile=CA)``, with
        ``load_cert_chain`` for client certificates) verifies the server."""
        self.url = nats_url
        self.agent_id = agent_id
        self.prefix = prefix
        self.timeout = timeout
        self._nc = nc
        self._own = nc is None
        self._auth: dict[str, Any] = {"user": user, "password": password, "token": token,
                                      "user_credentials": creds}
        self._tls = tls
        #: the reason of the last failed attempt nats-py reported (``reason``'s words)
        self.last_error: str | None = None
        #: the agent refused ``credit`` (it predates flow control): streams go without
        self._no_flow_control = False

    async def __aenter__(self) -> KernletClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._nc is None:
            uses_tls = self._tls is not None or self.url.startswith("tls://")

            async def on_error(exc: Exception) -> None:
                self.last_error = reason(exc, self.last_error, uses_tls)

            try:
                self._nc = await open_connection(self.url, self._tls, connect_timeout=5,
                                                 max_reconnect_attempts=3, error_cb=on_error,
                                                 **self._auth)
            except (nats.errors.Error, OSError) as exc:
                why = self.last_error or reason(exc, None, uses_tls)
                raise AgentUnavailable(f"cannot reach NATS at {self.url}: {why}") from exc

    async def close(self) -> None:
        if self._nc is not None and self._own:
            await self._nc.close()
        self._nc = None

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise AgentUnavailable("client not connected")
        return self._nc

    def _no_agent(self) -> str:
        return (f"no agent {self.agent_id!r} listens on NATS at {self.url} "
                f"(subject prefix {self.prefix!r})")

    def subject(self, command: str) -> str:
        return command_subject(self.prefix, self.agent_id, command)

    async def call(self, command: str, reply_timeout: float | None = None, **args: Any) -> Any:
        """One request-reply; returns the result or raises the agent's typed error."""
        return await self.call_raw(command, pack(args), reply_timeout)

    async def call_raw(self, command: str, data: bytes, timeout: float | None = None) -> Any:
        try:
            msg = await self.nc.request(
                self.subject(command), data, timeout=timeout or self.timeout
            )
        except nats.errors.NoRespondersError as exc:
            raise AgentUnavailable(self._no_agent()) from exc
        except nats.errors.TimeoutError as exc:
            raise AgentTimeout(f"{command}: no reply within {timeout or self.timeout} s") from exc
        return _result(unpack(msg.data, max_size=64 * 1024 * 1024))

    # -- commands ---------------------------------------------------------------------------

    async def ping(self, msg: str = "") -> dict[str, Any]:
        return dict(await self.call("ping", msg=msg))

    async def gather_hwinfo(self) -> dict[str, Any]:
        """``{plugins: {key: {slots, ...facts}}, slots: {name: {type, capacity, used, free}}}``."""
        return dict(await self.call("gather_hwinfo"))

    async def create_kernels(
        self, configs: list[dict[str, Any]], session_id: str | None = None,
        kernel_ids: list[str] | None = None, cluster: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Create kernels concurrently; one result per kernel: ``{"id", "ok", ...}``. With
        ``cluster`` (docs/sessions.md) they are one session on a network of their own."""
        ids = kernel_ids or [uuid.uuid4().hex[:16] for _ in configs]
        extra: dict[str, Any] = {"cluster": cluster} if cluster is not None else {}
        result = await self.call("create_kernels", session_id=session_id or ids[0],
                                 kernel_ids=ids, configs=configs, **extra)
        return list(result["kernels"])

    async def create_local_network(self, network: str) -> dict[str, Any]:
        """A bridge network the manager owns; kernels join it by ``cluster.network``."""
        return dict(await self.call("create_local_network", network=network))

    async def destroy_local_network(self, network: str) -> dict[str, Any]:
        return dict(await self.call("destroy_local_network", network=network))

    async def create_kernel(self, image: str, **config: Any) -> dict[str, Any]:
        """Create one kernel; raises the typed error if it failed."""
        kernel_id = config.pop("kernel_id", None)
        (res,) = await self.create_kernels([{"image": image, **config}],
                                           kernel_ids=[kernel_id] if kernel_id else None)
        if not res.get("ok"):
            raise error_from_wire(res.get("error"))
        return res

    async def destroy_kernel(
        self, kernel_id: str, reason: str = "user-requested"
    ) -> dict[str, Any]:
        return dict(await self.call("destroy_kernel", kernel_id=kernel_id, reason=reason))

    async def restart_kernel(self, kernel_id: str) -> dict[str, Any]:
        return dict(await self.call("restart_kernel", kernel_id=kernel_id))

    async def reset_agent(self, reason: str = "agent-reset") -> list[str]:
        """Destroy every kernel of the agent; the ids destroyed."""
        return list((await self.call("reset_agent", reason=reason))["destroyed"])

    async def logs(self, kernel_id: str, tail: int = 1000, since: float | None = None,
                   timestamps: bool = False) -> str:
        args: dict[str, Any] = {"kernel_id": kernel_id, "tail": tail}
        if since is not None:
            args["since"] = since
        if timestamps:
            args["timestamps"] = True
        return str((await self.call("get_logs", **args))["logs"])

    def follow_logs(self, kernel_id: str, tail: int = 1000, interval: float = 1.0,
                    ) -> AsyncIterator[tuple[str, str]]:
        """``(RFC 3339 time, line)`` for the last ``tail`` lines, then each new line as the
        container logs it (polled every ``interval`` s), until the kernel is gone."""
        return follow_logs(self, kernel_id, tail, interval)

    async def upload(self, kernel_id: str, path: str, data: bytes,
                     chunk: int = 512 * 1024) -> dict[str, Any]:
        """Write a file under /home/work, in chunks that fit a NATS message."""
        result: dict[str, Any] = {}
        for i in range(0, max(len(data), 1), chunk):
            result = dict(await self.call("upload_file", kernel_id=kernel_id, path=path,
                                          data=data[i:i + chunk], append=i > 0))
        return result

    async def download(self, kernel_id: str, path: str, max_bytes: int = 64 * 1024**2) -> bytes:
        """Read a file under /home/work (chunked); refuses files over ``max_bytes``."""
        out = bytearray()
        while True:
            part = await self.call("download_file", kernel_id=kernel_id, path=path,
                                   offset=len(out))
            if part["size"] > max_bytes:
                raise KernletError(f"{path} is {part['size']} bytes, over {max_bytes}")
            out += part["data"]
            if part["eof"] or not part["data"]:
                return bytes(out)

    async def list_files(self, kernel_id: str, path: str = ".") -> dict[str, Any]:
        return dict(await self.call("list_files", kernel_id=kernel_id, path=path))

    async def sync_kernel_registry(self, kernel_ids: list[str]) -> dict[str, Any]:
        return dict(await self.call("sync_kernel_registry", kernel_ids=kernel_ids))

    async def trigger_batch(self, kernel_id: str, code: str,
                            timeout: float | None = None) -> str:
        """Start a background batch job; its end is a session_success/failure event."""
        args: dict[str, Any] = {"kernel_id": kernel_id, "code": code}
        if timeout is not None:
            args["timeout"] = timeout
        return str((await self.call("trigger_batch_execution", **args))["run_id"])

    async def start_service(self, kernel_id: str, service: str) -> dict[str, Any]:
        """Start an in-container service; ``{name, url, host_port, token}`` once it answers."""
        return dict(await self.call("start_service", kernel_id=kernel_id, service=service))

    async def shutdown_service(self, kernel_id: str, service: str) -> dict[str, Any]:
        return dict(await self.call("shutdown_service", kernel_id=kernel_id, service=service))

    async def interrupt(self, kernel_id: str) -> dict[str, Any]:
        return dict(await self.call("interrupt_kernel", kernel_id=kernel_id))

    async def complete(self, kernel_id: str, text: str, pos: int | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {"kernel_id": kernel_id, "text": text}
        if pos is not None:
            args["pos"] = pos
        return dict(await self.call("get_completions", **args))

    async def list_kernels(self, all: bool = False) -> list[dict[str, Any]]:
        return list((await self.call("list_kernels", all=all))["kernels"])

    async def events(self, kernel_id: str) -> list[dict[str, Any]]:
        return list((await self.call("get_events", kernel_id=kernel_id))["events"])

    async def execute(
        self, kernel_id: str, code: str = "", mode: str = "query", run_id: str | None = None,
        opts: dict[str, Any] | None = None, flush_timeout: float | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The reference's batched execute: returns at finish, input wait or flush timeout.
        ``timeout`` limits the run: past it, it is interrupted (status ``exec-timeout``)."""
        args: dict[str, Any] = {"kernel_id": kernel_id, "run_id": run_id or uuid.uuid4().hex,
                                "mode": mode, "code": code, "opts": opts or {}}
        if flush_timeout is not None:
            args["flush_timeout"] = flush_timeout
        if timeout is not None:
            args["timeout"] = timeout
        return dict(await self.call("execute", reply_timeout=None if flush_timeout is None else
                                    flush_timeout + self.timeout, **args))

    async def stream(
        self, kernel_id: str, code: str = "", mode: str = "query", run_id: str | None = None,
        opts: dict[str, Any] | None = None, timeout: float | None = None,
        credit: int | None = DEFAULT_CREDIT,
    ) -> AsyncIterator[tuple[str, Any]]:
        """Yield ``(type, data)`` output items as produced; last item ``("result", {...})``.
        ``timeout`` limits the run (past it the agent interrupts it: ``exec-timeout``).
        ``credit``: flow control; the agent sends at most that many bytes of output this
        loop has not processed yet (a slow consumer slows the run, nothing is lost in the
        subscription); None: no flow control (the agent sends as fast as the run prints).
        An agent older than flow control refuses ``credit`` before it starts the run: this
        client then runs it without, and asks that agent without from then on."""
        args: dict[str, Any] = {"kernel_id": kernel_id, "run_id": run_id or uuid.uuid4().hex,
                                "mode": mode, "code": code, "opts": opts or {},
                                "stream": True}
        if timeout is not None:
            args["timeout"] = timeout
        if credit is not None and not self._no_flow_control:
            try:
                async for item in self._stream(args, credit):
                    yield item
                return
            except InvalidRequest as exc:
                if "credit: Extra inputs" not in exc.message:
                    raise
                self._no_flow_control = True
        async for item in self._stream(args, None):
            yield item

    async def _stream(
        self, args: dict[str, Any], credit: int | None,
    ) -> AsyncIterator[tuple[str, Any]]:
        kernel_id, run_id = args["kernel_id"], args["run_id"]
        if credit is not None:
            args = {**args, "credit": credit}
        inbox = self.nc.new_inbox()
        # room for the whole window and one message more, so nats-py never drops for lack
        # of space (its default is 128 MiB)
        sub = await self.nc.subscribe(inbox, pending_bytes_limit=max(
            128 * 1024 * 1024, 2 * (credit or 0)))
        processed, acked = 0, 0
        ack_subject = self.subject("ack_output")
        try:
            await self.nc.publish(self.subject("execute"), pack(args), reply=inbox)
            while True:
                try:
                    msg = await sub.next_msg(timeout=None)
                except nats.errors.TimeoutError:
                    continue
                if msg.headers and msg.headers.get("Status") == "503":
                    raise AgentUnavailable(self._no_agent())
                body = unpack(msg.data, max_size=64 * 1024 * 1024)
                if isinstance(body, dict) and "output" in body and body.get("ok"):
                    for kind, data in body["output"]:
                        yield kind, data
                    processed += len(msg.data)  # the consumer took every item of it
                    if credit is not None and processed - acked >= credit // 4:
                        acked = processed
                        await self.nc.publish(ack_subject, pack(
                            {"kernel_id": kernel_id, "run_id": run_id, "received": acked}))
                    continue
                yield "result", _result(body)
                return
        finally:
            await sub.unsubscribe()

    async def run(
        self, kernel_id: str, code: str = "", mode: str = "query",
        opts: dict[str, Any] | None = None, on_output: OutputCallback | None = None,
        on_input: InputCallback | None = None, timeout: float | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Run code to the end, streaming output to ``on_output``; answers input via
        ``on_input`` (returning None declines: the run is interrupted, as without
        ``on_input``). Returns the final result (``status``, ``exitCode``)."""
        run_id = run_id or uuid.uuid4().hex
        call_mode, text = mode, code
        while True:
            result: dict[str, Any] = {}
            prompt: Any = {}
            async for kind, data in self.stream(kernel_id, text, call_mode, run_id, opts,
                                                timeout if call_mode == mode else None):
                if kind == "result":
                    result = dict(data)
                elif kind == "waiting-input":
                    prompt = data
                elif on_output is not None:
                    maybe = on_output(kind, data)
                    if asyncio.iscoroutine(maybe):
                        await maybe
            if result.get("status") != "waiting-input":
                return result
            answer = None if on_input is None else on_input(
                prompt if isinstance(prompt, dict) else {})
            if asyncio.iscoroutine(answer):
                answer = await answer
            if answer is None:
                await self.interrupt(kernel_id)
                call_mode, text = "continue", ""
                continue
            text, call_mode = str(answer), "input"
