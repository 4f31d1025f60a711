"""Agent side of the runtime channel: a unix socket to the runtime inside a kernel container.

The runtime is the server (its socket lives in a bind-mounted directory, so the channel needs
no host port and survives an agent restart). Frames are those of :mod:`kernlet.events.codec`.
Requests carrying ``req`` get their reply matched by it; run messages (``run_id``) go to the
``on_run`` callback. Runs on the agent's event loop.

Flow control: between :meth:`RuntimeChannel.pause` and :meth:`RuntimeChannel.resume` the
channel reads nothing more from the socket (so it acknowledges nothing more either), except
while a request waits for its reply; the runtime keeps what it cannot write in its own bounded
outbox, which applies its policy (batch commands slowed, query output dropped with a note).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kernlet.errors import RuntimeUnavailable
from kernlet.events.codec import CodecError, FrameReader, frame
from kernlet.layout import describe_start

__all__ = ["RuntimeChannel"]

log = logging.getLogger(__name__)

#: Bytes asked of the socket per read; the stream reader buffers at most twice
#: :data:`READ_LIMIT` before it stops reading the socket (its transport pauses).
READ_SIZE = 256 * 1024
READ_LIMIT = 256 * 1024
#: How long one ``status`` request of :meth:`RuntimeChannel.connect` asks the runtime to hold
#: it while its ipykernel starts (seconds): the runtime answers as soon as it is ready.
STATUS_WAIT = 1.0

RunCallback = Callable[[dict[str, Any]], None]


class RuntimeChannel:
    """One connection to one kernel's runtime; reconnects when asked."""

    def __init__(self, socket_path: Path, on_run: RunCallback, on_lost: Callable[[], None]) -> None:
        self.path = socket_path
        self._on_run = on_run
        self._on_lost = on_lost
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._closed = False
        #: highest run-message seq processed; repeats (after a reconnect) are dropped
        self._last_seq = 0
        self._acked = 0
        #: the consumer is full: read only while a request waits for its reply
        self._paused = False
        #: wakes a paused reader (resume, a new request, close)
        self._nudge = asyncio.Event()
        #: held while a connection is being opened: callers that need one at the same time
        #: (the recovery's connect, an execute's send) share it. Two would race: the runtime
        #: keeps only the newest connection, and what was written on the other can be lost.
        self._opening = asyncio.Lock()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop reading after the current read (the consumer of run messages is full)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._nudge.set()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self, timeout: float, key: str | None = None) -> dict[str, Any]:
        """Connect (retrying while the runtime starts) until it reports ready; its status.

        ``timeout`` is the only window: each status request may take what is left of it (a
        runtime on a small cpu share answers slowly while its ipykernel boots). ``key`` names
        the setting that ``timeout`` comes from (``agent.create-timeout``); the error names it
        and says what was seen last.
        """
        deadline = time.monotonic() + timeout
        seen = "no attempt was made"
        while not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await self._ensure_open()
                # held by the runtime until its ipykernel is ready (older runtimes answer at
                # once, and the sleep below paces the next ask); at most half of what is left,
                # so that the last answer, with what the runtime saw, comes before the deadline
                wait = min(STATUS_WAIT, left / 2)
                status = await self.request({"op": "status", "wait": wait}, timeout=left)
                if status.get("data", {}).get("ready"):
                    return dict(status["data"])
                failed = status.get("data", {}).get("error")
                starting = status.get("data", {}).get("starting")
            except (TimeoutError, OSError, RuntimeUnavailable) as exc:
                seen = _describe(exc)
                await self._drop()
            else:
                if failed:
                    # its ipykernel did not start and it does not try again: waiting out the
                    # timeout would only delay the failure
                    raise RuntimeUnavailable(f"runtime at {self.path} failed: {failed}")
                seen = "the runtime answered, but its ipykernel was not ready yet"
                if isinstance(starting, dict):
                    seen += f" (after {describe_start(starting)})"
            await asyncio.sleep(0.05)
        named = f" ({key})" if key else ""
        raise RuntimeUnavailable(
            f"runtime at {self.path} not ready after {timeout:g} s{named}: {seen}"
        )

    async def _ensure_open(self) -> None:
        async with self._opening:
            if not self.connected:
                await self._open()

    async def _open(self) -> None:
        reader, writer = await asyncio.open_unix_connection(str(self.path), limit=READ_LIMIT)
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read(reader, writer))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader()
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                for msg in frames.feed(data):
                    self._dispatch(msg)
                if self._last_seq > self._acked and not writer.is_closing():
                    # tell the runtime what is processed: it keeps the rest for a reconnect
                    self._acked = self._last_seq
                    writer.write(frame({"op": "ack", "seq": self._acked}))
                while self._paused and not self._pending and not self._closed:
                    # backpressure: the socket fills, then the runtime's outbox
                    self._nudge.clear()
                    await self._nudge.wait()
        except (OSError, CodecError) as exc:
            log.warning("runtime channel %s broke: %s", self.path, exc)
        finally:
            if self._writer is writer:
                self._writer = None
                self._fail_pending("runtime connection lost")
                if not self._closed:
                    self._on_lost()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        req = msg.get("req")
        if req is not None and req in self._pending:
            fut = self._pending.pop(req)
            if not fut.done():
                fut.set_result(msg)
            return
        if msg.get("run_id") is not None:
            seq = msg.get("seq")
            if isinstance(seq, int):
                if seq <= self._last_seq:
                    return
                self._last_seq = seq
            self._on_run(msg)
        else:
            log.debug("runtime %s says %s", self.path, msg)

    def _fail_pending(self, why: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RuntimeUnavailable(why))
        self._pending.clear()

    async def send(self, msg: dict[str, Any]) -> None:
        if self._writer is None or self._writer.is_closing():
            raise RuntimeUnavailable(f"runtime at {self.path} is not connected")
        try:
            self._writer.write(frame(msg))
            await self._writer.drain()
        except (OSError, ConnectionError) as exc:
            raise RuntimeUnavailable(f"runtime at {self.path}: {exc}") from exc

    async def request(self, msg: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        req = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req] = fut
        self._nudge.set()  # a paused reader reads on until the reply comes
        try:
            await self.send({**msg, "req": req})
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(req, None)
        if reply.get("t") == "error":
            raise RuntimeUnavailable(str(reply.get("data", {}).get("message", reply)))
        return reply

    async def _drop(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = None

    async def close(self) -> None:
        self._closed = True
        self._nudge.set()
        self._fail_pending("runtime channel closed")
        await self._drop()


def _describe(exc: BaseException) -> str:
    """What a failed attempt to reach the runtime means, for the error of the last one."""
    if isinstance(exc, FileNotFoundError):
        return "its socket does not exist (the runtime never started serving)"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens on its socket (the runtime is not running)"
    if isinstance(exc, TimeoutError):
        return "the runtime did not answer its status request"
    return f"{type(exc).__name__}: {exc}"
