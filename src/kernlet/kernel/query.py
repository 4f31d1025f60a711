"""Query mode: Python code runs on an ipykernel that this runtime starts and talks to.

One asyncio loop drives everything: jupyter_client's AsyncKernelManager starts, interrupts
and restarts the kernel; the AsyncKernelClient's channels are zmq.asyncio sockets, which
this module reads itself (one task per channel) and routes by parent message id. Works with
jupyter_client 7.4 (Debian bookworm, in the kernel image) and 8.x (the host venv).

The kernel is started from a kernelspec this module writes, whose argv is this very
interpreter running ``ipykernel_launcher``: the runtime and the kernel always share one Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kernlet.layout import DEFAULT_START_TIMEOUT

log = logging.getLogger("kernlet.kernel.query")

__all__ = ["QueryEngine", "strip_ansi"]

Emit = Callable[[str, Any], None]

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
#: Interrupted runs finish with this exit code (128 + SIGINT, like a shell).
EXIT_INTERRUPTED = 130
#: Seconds between liveness checks of an idle kernel.
WATCH_INTERVAL = 2.0


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


_DELIM = b"<IDS|MSG>"


def _decode(session: Any, parts: list[bytes]) -> dict[str, Any]:
    """A Jupyter wire message as a dict with header, parent_header, msg_type and content.

    Session.deserialize also parses every date in the headers, adapts protocol versions and
    keeps a replay-digest set: that is three quarters of the runtime's CPU per trivial run, and
    none of it is needed here (a private ipc channel to a kernel of protocol 5.x). The HMAC
    signature is still checked.
    """
    idx = parts.index(_DELIM)
    signature, header, parent, metadata, content = parts[idx + 1 : idx + 6]
    if session.auth is not None and not hmac.compare_digest(
        signature, session.sign([header, parent, metadata, content])
    ):
        raise ValueError("invalid signature on a message from the kernel")
    unpack = session.unpack
    head = unpack(header)
    return {
        "header": head,
        "msg_type": head.get("msg_type"),
        "parent_header": unpack(parent),
        "content": unpack(content),
    }


class _Run:
    """One execute request on the kernel."""

    def __init__(self, run_id: str, msg_id: str, emit: Emit) -> None:
        self.run_id = run_id
        self.msg_id = msg_id
        self.emit = emit
        loop = asyncio.get_running_loop()
        self.reply: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.idle = asyncio.Event()
        self.interrupted = False
        self.waiting_input: dict[str, Any] | None = None
        self.error_seen = False


class QueryEngine:
    """Owns the ipykernel: start, execute, input, complete, interrupt, restart."""

    def __init__(
        self,
        workdir: str,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        timeout_key: str = "the runtime's default",
    ) -> None:
        self.workdir = workdir
        #: seconds a (re)start of the ipykernel may take, and where that figure comes from
        #: (named in the error when it is exceeded)
        self.start_timeout = start_timeout
        self.timeout_key = timeout_key
        self.ready = False
        self.error: str | None = None
        self.km: Any = None
        self.kc: Any = None
        self._dir = Path(tempfile.mkdtemp(prefix="kernlet-runtime-"))
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._iopub_parents: set[str] = set()
        self._run: _Run | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._ready_event = asyncio.Event()
        self._lock = asyncio.Lock()  # held while (re)starting or beginning a run

    # -- lifecycle -------------------------------------------------------------------------

    def _write_kernelspec(self) -> Path:
        spec_dir = self._dir / "kernels" / "python3"
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "argv": [
                sys.executable,
                "-Xfrozen_modules=off",  # else ipykernel's debugger warns at every start
                "-m",
                "ipykernel_launcher",
                "-f",
                "{connection_file}",
            ],
            "display_name": "Python 3 (kernlet)",
            "language": "python",
            "interrupt_mode": "signal",
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        return self._dir / "kernels"

    async def start(self) -> None:
        """Start the kernel and wait until it answers; sets ``ready`` or ``error``."""
        try:
            from jupyter_client.kernelspec import KernelSpecManager
            from jupyter_client.manager import AsyncKernelManager

            ksm = KernelSpecManager(kernel_dirs=[str(self._write_kernelspec())])
            km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ksm)
            km.connection_file = str(self._dir / "connection.json")
            # Unix sockets beside the connection file: no TCP ports open in the container.
            km.transport = "ipc"
            env = dict(os.environ)
            env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
            env.setdefault("PYTHONUNBUFFERED", "1")
            env.pop("PYTHONSTARTUP", None)
            # ipykernel's debugger otherwise warns about frozen modules at every start.
            env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
            await km.start_kernel(env=env, cwd=self.workdir)
            self.km = km
            kc = km.client()
            # shell= names the Jupyter shell channel, not a system shell.
            kc.start_channels(shell=True, iopub=True, stdin=True, hb=False, control=False)  # noqa: S604
            self.kc = kc
            self._readers = [
                asyncio.create_task(self._read(kc.shell_channel, self._on_shell)),
                asyncio.create_task(self._read(kc.iopub_channel, self._on_iopub)),
                asyncio.create_task(self._read(kc.stdin_channel, self._on_stdin)),
            ]
            await self._wait_ready(self.start_timeout)
        except Exception as exc:
            log.exception("the ipykernel did not start")
            self.error = f"the ipykernel did not start: {exc!r}"
            self._ready_event.set()
            return
        self.ready = True
        self.error = None
        self._ready_event.set()
        log.info("ipykernel ready (pid %s)", self.kernel_pid())
        self._readers.append(asyncio.create_task(self._watch()))

    async def _watch(self) -> None:
        """Restart a kernel that died between runs (during a run, ``_finish`` does it)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            async with self._lock:
                if self._run is None and self.ready and not await self.km.is_alive():
                    log.warning("the ipykernel died while idle; restarting it")
                    await self._restart()

    async def wait_started(self) -> None:
        await self._ready_event.wait()

    def kernel_pid(self) -> int | None:
        try:
            proc = self.km.provisioner.process  # jupyter_client >= 7
        except AttributeError:
            proc = getattr(self.km, "kernel", None)
        return getattr(proc, "pid", None)

    async def _wait_ready(self, limit: float) -> None:
        """kernel_info until answered AND its status messages show up on iopub.

        The second condition proves the iopub subscription is live (a late-joining SUB socket
        would otherwise lose the first run's output).
        """
        deadline = time.monotonic() + limit
        while True:
            msg_id = self.kc.kernel_info()
            self._iopub_parents.add(msg_id)
            fut = self._expect_reply(msg_id)
            try:
                await asyncio.wait_for(fut, 1.0)
                await asyncio.sleep(0.05)  # let its iopub status arrive
                if msg_id not in self._iopub_parents:
                    return
            except TimeoutError:
                pass
            finally:
                self._replies.pop(msg_id, None)
                self._iopub_parents.discard(msg_id)
            if not await self.km.is_alive():
                raise RuntimeError("the kernel died before answering kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the kernel did not answer within {limit:g} s ({self.timeout_key})"
                )

    async def shutdown(self) -> None:
        for task in self._readers:
            task.cancel()
        if self.kc is not None:
            with contextlib.suppress(Exception):
                self.kc.stop_channels()
        if self.km is not None:
            with contextlib.suppress(Exception):
                await self.km.shutdown_kernel(now=True)
        shutil.rmtree(self._dir, ignore_errors=True)

    async def _restart(self) -> None:
        self.ready = False
        self._ready_event.clear()
        log.info("restarting the ipykernel")
        try:
            await self.km.restart_kernel(now=True)
            await self._wait_ready(self.start_timeout)
        except Exception as exc:
            log.exception("kernel restart failed")
            self.error = f"the ipykernel did not restart: {exc!r}"
        else:
            self.ready = True
            self.error = None
            log.info("ipykernel restarted (pid %s)", self.kernel_pid())
        self._ready_event.set()

    # -- channel readers -------------------------------------------------------------------

    async def _read(self, channel: Any, handle: Callable[[dict[str, Any]], None]) -> None:
        socket = channel.socket
        session = self.kc.session
        count = 0
        while True:
            try:
                parts = await socket.recv_multipart()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kernel channel closed")
                return
            try:
                handle(_decode(session, parts))
            except Exception:
                log.exception("bad message from the kernel")
            count += 1
            if count % 64 == 0:
                # A ready socket's recv does not yield; let the loop write output meanwhile.
                await asyncio.sleep(0)

    def _expect_reply(self, msg_id: str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[msg_id] = fut
        return fut

    def _on_shell(self, msg: dict[str, Any]) -> None:
        fut = self._replies.pop(msg["parent_header"].get("msg_id", ""), None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def _on_iopub(self, msg: dict[str, Any]) -> None:
        parent = msg["parent_header"].get("msg_id")
        kind = msg["msg_type"]
        content = msg["content"]
        run = self._run
        if run is None or parent != run.msg_id:
            if kind == "status" and parent in self._iopub_parents:
                self._iopub_parents.discard(parent)
            elif kind == "stream" and run is not None:
                # Output of a thread started by an earlier cell: show it with the current run.
                run.emit(content.get("name", "stdout"), content.get("text", ""))
            return
        if kind == "stream":
            run.emit("stderr" if content.get("name") == "stderr" else "stdout", content["text"])
        elif kind in ("display_data", "execute_result", "update_display_data"):
            self._emit_data(run, content.get("data", {}), kind == "execute_result")
        elif kind == "error":
            run.error_seen = True
            text = "\n".join(content.get("traceback") or [])
            if not text:
                text = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"
            run.emit("stderr", strip_ansi(text) + "\n")
        elif kind == "status" and content.get("execution_state") == "idle":
            run.idle.set()

    @staticmethod
    def _emit_data(run: _Run, data: dict[str, Any], is_result: bool) -> None:
        """The richest representation only: png, jpeg, svg, html, then plain text."""
        for mime in ("image/png", "image/jpeg", "image/gif"):
            if mime in data:
                payload = str(data[mime]).replace("\n", "")
                run.emit("media", {"type": mime, "data": f"data:{mime};base64,{payload}"})
                return
        if "image/svg+xml" in data:
            run.emit("media", {"type": "image/svg+xml", "data": str(data["image/svg+xml"])})
            return
        if "text/html" in data:
            run.emit("html", str(data["text/html"]))
            return
        text = data.get("text/plain")
        if text is not None:
            run.emit("stdout", str(text) + "\n")

    def _on_stdin(self, msg: dict[str, Any]) -> None:
        run = self._run
        if msg["msg_type"] != "input_request" or run is None:
            return
        content = msg["content"]
        request = {
            "is_password": bool(content.get("password", False)),
            "prompt": str(content.get("prompt", "")),
        }
        run.waiting_input = request
        run.emit("waiting-input", request)

    # -- operations ------------------------------------------------------------------------

    @property
    def waiting_input(self) -> dict[str, Any] | None:
        run = self._run
        if run is None or run.waiting_input is None:
            return None
        return dict(run.waiting_input, run_id=run.run_id)

    async def execute(self, run_id: str, code: str, emit: Emit) -> int:
        """Run ``code``; returns the exit code (0 ok, 1 error, 130 interrupted)."""
        await self._ready_event.wait()
        async with self._lock:
            if self.ready and not await self.km.is_alive():
                log.warning("the ipykernel is dead; restarting it")
                emit("stderr", "kernlet: the Python kernel had died; restarting it\n")
                await self._restart()
            if not self.ready:
                emit("stderr", f"kernlet: {self.error or 'the kernel is not running'}\n")
                return 1
            msg_id = self.kc.execute(
                code, silent=False, store_history=True, allow_stdin=True, stop_on_error=False
            )
            run = _Run(run_id, msg_id, emit)
            self._replies[msg_id] = run.reply
            self._run = run
        try:
            return await self._finish(run)
        finally:
            self._run = None
            self._replies.pop(msg_id, None)

    async def _finish(self, run: _Run) -> int:
        done = asyncio.ensure_future(self._both(run))
        try:
            while True:
                finished, _ = await asyncio.wait({done}, timeout=1.0)
                if finished:
                    break
                if not await self.km.is_alive():
                    run.emit("stderr", "\nkernlet: the Python kernel died; restarting it\n")
                    async with self._lock:
                        await self._restart()
                    return EXIT_INTERRUPTED if run.interrupted else 1
        finally:
            done.cancel()
        reply = run.reply.result()["content"]
        status = reply.get("status")
        for item in reply.get("payload") or []:
            if item.get("source") == "page":
                text = item.get("data", {}).get("text/plain")
                if text:
                    run.emit("stdout", strip_ansi(str(text)) + "\n")
        if status == "ok":
            return 0
        if run.interrupted and (status == "aborted" or reply.get("ename") == "KeyboardInterrupt"):
            return EXIT_INTERRUPTED
        if status == "error" and not run.error_seen:
            text = "\n".join(reply.get("traceback") or []) or reply.get("evalue", "")
            run.emit("stderr", strip_ansi(str(text)) + "\n")
        return 1

    @staticmethod
    async def _both(run: _Run) -> None:
        await run.reply
        # The reply can overtake the last iopub messages; idle marks the end of output.
        try:
            await asyncio.wait_for(run.idle.wait(), 5.0)
        except TimeoutError:
            log.warning("no idle status for %s", run.msg_id)

    def provide_input(self, text: str) -> None:
        run = self._run
        if run is None or run.waiting_input is None:
            raise LookupError("no input request is pending")
        run.waiting_input = None
        self.kc.input(text)

    async def interrupt(self) -> None:
        if self._run is not None:
            self._run.interrupted = True
        if self.km is not None:
            await self.km.interrupt_kernel()

    @property
    def busy(self) -> bool:
        return self._run is not None

    async def complete(self, text: str, pos: int) -> dict[str, Any]:
        empty = {"matches": [], "cursor_start": pos, "cursor_end": pos}
        if not self.ready or self._run is not None:
            # The kernel answers shell requests one at a time: it would not answer until the
            # running code finishes.
            return empty
        msg_id = self.kc.complete(text, pos)
        fut = self._expect_reply(msg_id)
        try:
            reply = (await asyncio.wait_for(fut, 5.0))["content"]
        except TimeoutError:
            return empty
        finally:
            self._replies.pop(msg_id, None)
        return {
            "matches": list(reply.get("matches", [])),
            "cursor_start": int(reply.get("cursor_start", pos)),
            "cursor_end": int(reply.get("cursor_end", pos)),
        }
