"""The runtime's unix-socket server: framing, op routing, the run queue, output delivery.

One agent connection at a time; a new connection replaces the old one. Frames are
:func:`kernlet.events.codec.frame` maps both ways. Run messages go through the
:class:`~kernlet.kernel.outbox.Outbox` (sequence numbers, coalescing, buffering while no agent
is connected); replies to requests (status, pong, completion, error) go straight to the
connection that asked. See docs/runtime.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from pathlib import Path
from typing import Any

from kernlet import __version__
from kernlet.events.codec import CodecError, FrameReader, FrameTooLarge, frame
from kernlet.kernel.batch import BatchEngine
from kernlet.kernel.outbox import Outbox
from kernlet.kernel.query import CompletionFailed, QueryEngine
from kernlet.kernel.translate import SHAPES
from kernlet.layout import DEFAULT_START_TIMEOUT

log = logging.getLogger("kernlet.kernel.server")

__all__ = ["Runtime", "serve"]

#: Bytes handed to the socket per write while output is pending.
WRITE_CHUNK = 256 * 1024
#: The transport's write buffer above which the runtime stops writing (and resumes below LOW).
TRANSPORT_HIGH = 1024 * 1024
TRANSPORT_LOW = 256 * 1024
#: Pending output above which the outbox is flushed at once instead of at the next loop turn.
FLUSH_NOW = 256 * 1024
#: Pending output above which batch commands' pipes are not read while an agent is connected.
BACKPRESSURE = 8 * 1024 * 1024
#: The longest a ``status`` request may ask to be held for readiness (its ``wait``), seconds.
MAX_STATUS_WAIT = 60.0


class _Run:
    __slots__ = ("code", "mode", "opts", "run_id")

    def __init__(self, run_id: str, mode: str, code: str, opts: dict[str, Any]) -> None:
        self.run_id = run_id
        self.mode = mode
        self.code = code
        self.opts = opts


class _Connection(asyncio.Protocol):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.closed = False
        self._frames = FrameReader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=TRANSPORT_HIGH, low=TRANSPORT_LOW)
        self.runtime.attach(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.runtime.detach(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.runtime.schedule_flush()

    def data_received(self, data: bytes) -> None:
        try:
            for msg in self._frames.items(data):
                if isinstance(msg, CodecError):  # a bad frame: say why, read on
                    self.reply({"t": "error", "req": None, "data": {"message": str(msg)}})
                    continue
                self.runtime.handle(self, msg)
                if self.closed:
                    return
        except FrameTooLarge:  # the stream cannot be resynchronised: say why and hang up
            self.reply({"t": "error", "req": None, "data": {"message": "frame too large"}})
            self.close()

    def reply(self, msg: dict[str, Any]) -> None:
        if self.transport is None or self.closed:
            return
        try:
            self.transport.write(frame(msg))
        except CodecError as exc:
            log.warning("cannot encode reply: %s", exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Runtime:
    """Everything the runtime serves: owns the engines, the run queue and the outbox."""

    def __init__(
        self,
        workdir: str,
        buffer_limit: int = 64 * 1024 * 1024,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        timeout_key: str = "the runtime's default",
    ) -> None:
        self.workdir = workdir
        self.outbox = Outbox(limit=buffer_limit)
        self.query = QueryEngine(workdir, start_timeout, timeout_key)
        self.batch = BatchEngine(workdir, self.room)
        self.conn: _Connection | None = None
        self._queue: deque[_Run] = deque()
        self._queue_event = asyncio.Event()
        self._current: _Run | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._room_event = asyncio.Event()
        self._room_event.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._ops = {
            "status": self._op_status,
            "ping": self._op_ping,
            "execute": self._op_execute,
            "input": self._op_input,
            "interrupt": self._op_interrupt,
            "complete": self._op_complete,
            "ack": self._op_ack,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._spawn(self.query.start())
        self._worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.batch.kill_all()
        await self.query.shutdown()
        if self.conn is not None:
            self.flush()
            self.conn.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connections -----------------------------------------------------------------------

    def attach(self, conn: _Connection) -> None:
        old, self.conn = self.conn, conn
        if old is not None:
            log.info("a new agent connection replaces the old one")
            old.close()
        self.outbox.rewind()
        self.schedule_flush()

    def detach(self, conn: _Connection) -> None:
        if self.conn is conn:
            self.conn = None
            self._room_event.set()  # nobody to wait for: buffer (bounded) instead

    # -- output ----------------------------------------------------------------------------

    def emitter(self, run_id: str) -> Any:
        outbox = self.outbox

        def emit(kind: str, data: Any) -> None:
            outbox.push({"t": kind, "run_id": run_id, "data": data})
            if outbox.pending_bytes >= FLUSH_NOW:
                self.flush()
            else:
                self.schedule_flush()

        return emit

    def schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        conn = self.conn
        while conn is not None and not conn.paused and not conn.closed and len(self.outbox):
            chunks = []
            for msg in self.outbox.take(WRITE_CHUNK):
                try:
                    chunks.append(frame(msg))
                except CodecError as exc:
                    note = dict(
                        msg,
                        t="stderr",
                        data=f"\nkernlet: a {msg['t']} message was too large to send ({exc})\n",
                    )
                    chunks.append(frame(note))
            assert conn.transport is not None
            conn.transport.write(b"".join(chunks))
        if conn is None or self.outbox.pending_bytes < BACKPRESSURE // 2:
            self._room_event.set()

    async def room(self) -> None:
        """Wait while a connected agent is far behind (batch output backpressure)."""
        while self.conn is not None and self.outbox.pending_bytes > BACKPRESSURE:
            self._room_event.clear()
            await self._room_event.wait()

    # -- ops -------------------------------------------------------------------------------

    def handle(self, conn: _Connection, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        handler = self._ops.get(op) if isinstance(op, str) else None
        if handler is None:
            self._error(conn, msg, f"unknown op {op!r}")
            return
        try:
            handler(conn, msg)
        except (KeyError, TypeError, ValueError, LookupError) as exc:
            self._error(conn, msg, f"bad {op} request: {exc}")

    @staticmethod
    def _error(conn: _Connection, msg: dict[str, Any], message: str) -> None:
        conn.reply({"t": "error", "req": msg.get("req"), "data": {"message": message}})

    def _op_ping(self, conn: _Connection, msg: dict[str, Any]) -> None:
        conn.reply({"t": "pong", "req": msg.get("req")})

    def status(self) -> dict[str, Any]:
        return {
            "ready": self.query.ready,
            "busy": self._current.run_id if self._current is not None else None,
            "queued": [run.run_id for run in self._queue],
            "waiting_input": self.query.waiting_input,
            "runtime": self.query.language,
            "pid": os.getpid(),
            "kernel_pid": self.query.kernel_pid() if self.query.km is not None else None,
            "version": __version__,
            "error": self.query.error,
            "starting": None if self.query.ready else self.query.probe.progress.as_dict(),
            "start_timeout": self.query.start_timeout,
            "seq": self.outbox.seq,
            "dropped_bytes": self.outbox.dropped_bytes,
        }

    def _op_status(self, conn: _Connection, msg: dict[str, Any]) -> None:
        """The status now; with ``wait`` (seconds), once the ipykernel is ready or failed to
        start, or when ``wait`` is up, whichever comes first (no polling while it boots)."""
        wait = msg.get("wait")
        if wait is not None and (isinstance(wait, bool) or not isinstance(wait, int | float)
                                 or not 0 < wait <= MAX_STATUS_WAIT):
            raise ValueError(f"wait must be a number of seconds above 0, at most "
                             f"{MAX_STATUS_WAIT:g}")
        if wait is None or self.query.ready or self.query.error:
            conn.reply({"t": "status", "req": msg.get("req"), "data": self.status()})
            return

        async def answer() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.query.wait_started(), wait)
            conn.reply({"t": "status", "req": msg.get("req"), "data": self.status()})

        self._spawn(answer())

    def _op_ack(self, conn: _Connection, msg: dict[str, Any]) -> None:
        self.outbox.ack(int(msg["seq"]))

    def _op_execute(self, conn: _Connection, msg: dict[str, Any]) -> None:
        run_id = msg["run_id"]
        mode = msg.get("mode", "query")
        if not isinstance(run_id, str) or not run_id:
            raise ValueError("run_id must be a non-empty string")
        if mode not in ("query", "batch"):
            raise ValueError(f"unknown mode {mode!r}")
        if (self._current is not None and self._current.run_id == run_id) or any(
            run.run_id == run_id for run in self._queue
        ):
            raise ValueError(f"run {run_id!r} is already running or queued")
        code = msg.get("code", "")
        opts = msg.get("opts") or {}
        if mode == "query" and not isinstance(code, str):
            raise TypeError("code must be a string")
        if not isinstance(opts, dict):
            raise TypeError("opts must be a map")
        if mode == "query" and opts.get("output", SHAPES[0]) not in SHAPES:
            raise ValueError(f"opts.output must be one of {', '.join(SHAPES)}")
        if mode == "query" and opts.get("stdin", "allow") not in ("allow", "refuse"):
            raise ValueError("opts.stdin must be allow or refuse")
        self._queue.append(_Run(run_id, mode, code, opts))
        self._queue_event.set()

    def _op_input(self, conn: _Connection, msg: dict[str, Any]) -> None:
        run_id = msg.get("run_id")
        text = msg["text"]
        if not isinstance(text, str):
            raise TypeError("text must be a string")
        current = self._current
        if current is None or (run_id is not None and run_id != current.run_id):
            raise LookupError(f"run {run_id!r} is not running")
        if current.mode != "query":
            raise LookupError("batch runs read no input")
        self.query.provide_input(text)

    def _op_interrupt(self, conn: _Connection, msg: dict[str, Any]) -> None:
        current = self._current
        if current is None:
            return
        if current.mode == "batch":
            self.batch.interrupt()
        else:
            self._spawn(self.query.interrupt())

    def _op_complete(self, conn: _Connection, msg: dict[str, Any]) -> None:
        text = msg["text"]
        if not isinstance(text, str):
            raise TypeError("text must be a string")
        pos = len(text) if msg.get("pos") is None else max(0, min(int(msg["pos"]), len(text)))

        async def answer() -> None:
            try:
                data = await self.query.complete(text, pos)
            except CompletionFailed as exc:  # not ready, no answer in time, or its error
                self._error(conn, msg, str(exc))
            except Exception as exc:
                log.exception("completion failed")
                self._error(conn, msg, repr(exc))
            else:
                conn.reply({"t": "completion", "req": msg.get("req"), "data": data})

        self._spawn(answer())

    # -- the run queue ---------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._queue_event.clear()
                await self._queue_event.wait()
            run = self._queue.popleft()
            self._current = run
            emit = self.emitter(run.run_id)
            try:
                if run.mode == "batch":
                    code = await self.batch.execute(run.opts, emit)
                else:
                    shape = str(run.opts.get("output") or SHAPES[0])
                    stdin = run.opts.get("stdin") != "refuse"
                    code = await self.query.execute(run.run_id, run.code, emit, shape, stdin)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("run %s failed", run.run_id)
                emit("stderr", f"\nkernlet: internal error: {exc!r}\n")
                code = 1
            self._current = None
            emit("finished", {"exitCode": code})


async def serve(
    socket_path: str,
    workdir: str,
    buffer_limit: int = 64 * 1024 * 1024,
    start_timeout: float = DEFAULT_START_TIMEOUT,
    timeout_key: str = "the runtime's default",
) -> None:
    """Run the runtime until SIGTERM or SIGINT. ``start_timeout``: seconds the ipykernel may
    take to start; ``timeout_key`` names where that figure comes from in the error."""
    import signal

    loop = asyncio.get_running_loop()
    runtime = Runtime(workdir, buffer_limit, start_timeout, timeout_key)
    path = Path(socket_path)
    _remove(path)  # a stale socket of an earlier runtime
    server = await loop.create_unix_server(lambda: _Connection(runtime), str(path))
    _chmod(path, 0o666)  # the agent connects as root on the host, the runtime runs as uid 1000
    runtime.start()
    log.info("kernlet runtime %s serving on %s (workdir %s, start timeout %g s: %s)",
             __version__, path, workdir, start_timeout, timeout_key)
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        log.info("stopping")
        server.close()
        await runtime.stop()
        _remove(path)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _chmod(path: Path, mode: int) -> None:
    path.chmod(mode)
