"""Query mode: Python code runs on an ipykernel that this runtime starts and talks to.

One asyncio loop drives everything. :class:`QueryEngine` owns the kernel's life (start,
readiness, the idle watchdog, restart) and its requests (execute, input, complete, interrupt),
and routes the messages it reads by parent message id: the ipykernel's process and channels
are in :mod:`kernlet.kernel.jupyter`, the translation of a run's messages into kernlet's run
messages in :mod:`kernlet.kernel.translate`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from kernlet.kernel import jupyter
from kernlet.kernel.probe import ReadinessProbe
from kernlet.kernel.translate import (
    EXIT_INTERRUPTED,
    Emit,
    Run,
    exit_code,
    on_input_request,
    on_iopub,
    strip_ansi,
)
from kernlet.layout import DEFAULT_START_TIMEOUT

log = logging.getLogger("kernlet.kernel.query")

__all__ = ["COMPLETE_TIMEOUT", "CompletionFailed", "QueryEngine", "strip_ansi"]

#: Seconds between liveness checks of an idle kernel.
WATCH_INTERVAL = 2.0
#: Seconds between the log lines of a start that takes long.
PROGRESS_INTERVAL = 10.0
#: Seconds a live kernel may stay silent (no reply, no iopub message) before the probe closes
#: the client's channels and opens them again. zmq's FD is edge-triggered: a socket whose
#: wake-up was consumed elsewhere holds its messages unread until a later event on it, and
#: a new connection is such an event (ipykernel issue 1554 describes one such window). A
#: kernel still importing its modules loses nothing by it: the requests are sent again.
RECONNECT_AFTER = 30.0
#: Seconds the kernel may take to answer a complete_request. A kernel's first completion is
#: cold (IPython's jedi parses the module and its stubs): 1-3 s on an idle 2-core machine,
#: 4-8 s on a loaded one. The agent waits 10 s for the reply (``RunBook.complete``): the
#: runtime takes as long as it can and still answers first, with an error.
COMPLETE_TIMEOUT = 9.0


class CompletionFailed(Exception):
    """The kernel cannot complete: it is not ready, did not answer in time, or failed."""


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
        self.complete_timeout = COMPLETE_TIMEOUT
        self.ready = False
        self.error: str | None = None
        self.km: Any = None
        self.kc: Any = None
        #: the kernel's language from its kernelspec ("python" until it is known)
        self.language = "python"
        self._dir = Path(tempfile.mkdtemp(prefix="kernlet-runtime-"))
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        #: the readiness probe of the current or last (re)start
        self.probe = ReadinessProbe()
        self._run: Run | None = None
        self._readers: list[asyncio.Task[None]] = []  # the channels' readers
        self._watcher: asyncio.Task[None] | None = None
        self._ready_event = asyncio.Event()
        self._lock = asyncio.Lock()  # held while (re)starting or beginning a run

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the kernel and wait until it answers; sets ``ready`` or ``error``."""
        try:
            self.km = await jupyter.start_kernel(self._dir, self.workdir)
            self._open_channels()
            await self._wait_ready(self.start_timeout)
        except Exception as exc:
            log.exception("the ipykernel did not start")
            self.error = f"the ipykernel did not start: {exc!r}"
            self._ready_event.set()
            return
        self.ready = True
        self.error = None
        self.language = jupyter.kernel_language(self.km)
        self._ready_event.set()
        log.info("%s kernel ready (pid %s)", self.language, self.kernel_pid())
        self._watcher = asyncio.create_task(self._watch())

    def _open_channels(self) -> None:
        self.kc = kc = jupyter.connect(self.km)
        self._readers = [
            asyncio.create_task(jupyter.read_channel(kc.shell_channel, kc.session, self._on_shell)),
            asyncio.create_task(jupyter.read_channel(kc.iopub_channel, kc.session, self._on_iopub)),
            asyncio.create_task(jupyter.read_channel(kc.stdin_channel, kc.session, self._on_stdin)),
        ]

    def _reconnect(self) -> None:
        """Close the client's channels and open new ones to the same kernel."""
        for task in self._readers:
            task.cancel()
        jupyter.close_channels(self.kc)
        self._open_channels()

    async def _watch(self) -> None:
        """Restart a kernel that died between runs (during a run, ``_finish`` does it)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            jupyter.kick(self.kc)
            async with self._lock:
                if self._run is None and self.ready and not await self.km.is_alive():
                    log.warning("the ipykernel died while idle; restarting it")
                    await self._restart()

    async def wait_started(self) -> None:
        await self._ready_event.wait()

    def kernel_pid(self) -> int | None:
        return jupyter.kernel_pid(self.km)

    async def _wait_ready(self, limit: float) -> None:
        """kernel_info once a second until the kernel proves ready (see
        :mod:`kernlet.kernel.probe`); RuntimeError if it dies or ``limit`` seconds pass."""
        deadline = time.monotonic() + limit
        self.probe = probe = ReadinessProbe()
        progress = probe.progress
        next_note, next_reconnect = PROGRESS_INTERVAL, RECONNECT_AFTER
        while True:
            probe.sent(self.kc.kernel_info())
            if await probe.wait(1.0):
                return
            jupyter.kick(self.kc)
            if not await self.km.is_alive():
                raise RuntimeError(
                    f"the kernel died before answering kernel_info (after {progress.describe()})"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the kernel did not answer within {limit:g} s ({self.timeout_key}; "
                    f"after {progress.describe()})"
                )
            if progress.seconds > next_note:
                next_note += PROGRESS_INTERVAL
                log.info("the ipykernel is not ready after %s", progress.describe())
            if not progress.heard and progress.seconds > next_reconnect:
                next_reconnect += RECONNECT_AFTER
                log.warning(
                    "the ipykernel has not answered after %s; reconnecting its channels",
                    progress.describe(),
                )
                progress.reconnects += 1
                self._reconnect()

    async def shutdown(self) -> None:
        for task in [*self._readers, self._watcher]:
            if task is not None:
                task.cancel()
        await jupyter.stop_kernel(self.km, self.kc)
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

    def _expect_reply(self, msg_id: str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[msg_id] = fut
        return fut

    def _on_shell(self, msg: dict[str, Any]) -> None:
        parent = msg["parent_header"].get("msg_id", "")
        fut = self._replies.pop(parent, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)
        elif fut is None and not self.ready:
            self.probe.on_shell(parent)

    def _on_iopub(self, msg: dict[str, Any]) -> None:
        parent = msg["parent_header"].get("msg_id")
        kind = msg["msg_type"]
        content = msg["content"]
        run = self._run
        if run is None or parent != run.msg_id:
            if not self.ready:
                self.probe.on_iopub(parent, kind)
            if kind == "stream" and run is not None:
                # Output of a thread started by an earlier cell: show it with the current run.
                run.stream(content.get("name", "stdout"), content.get("text", ""))
            return
        on_iopub(run, kind, content)

    def _on_stdin(self, msg: dict[str, Any]) -> None:
        run = self._run
        if msg["msg_type"] != "input_request" or run is None:
            return
        on_input_request(run, msg["content"])

    # -- operations ------------------------------------------------------------------------

    @property
    def waiting_input(self) -> dict[str, Any] | None:
        run = self._run
        if run is None or run.waiting_input is None:
            return None
        return dict(run.waiting_input, run_id=run.run_id)

    async def execute(self, run_id: str, code: str, emit: Emit, shape: str = "console",
                      allow_stdin: bool = True) -> int:
        """Run ``code``, its output in ``shape`` (``console`` or ``jupyter``, see
        :mod:`kernlet.kernel.translate`); without ``allow_stdin`` the kernel refuses input()
        itself (StdinNotImplementedError, as under nbclient). Returns the exit code (0 ok, 1
        error, 130 interrupted)."""
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
                code, silent=False, store_history=True, allow_stdin=allow_stdin,
                stop_on_error=False,
            )
            run = Run(run_id, msg_id, emit, shape)
            self._replies[msg_id] = run.reply
            self._run = run
        try:
            return await self._finish(run)
        finally:
            self._run = None
            self._replies.pop(msg_id, None)

    async def _finish(self, run: Run) -> int:
        done = asyncio.ensure_future(self._both(run))
        try:
            while True:
                finished, _ = await asyncio.wait({done}, timeout=1.0)
                if finished:
                    break
                jupyter.kick(self.kc)
                if not await self.km.is_alive():
                    run.emit("stderr", "\nkernlet: the Python kernel died; restarting it\n")
                    async with self._lock:
                        await self._restart()
                    return EXIT_INTERRUPTED if run.interrupted else 1
        finally:
            done.cancel()
        return exit_code(run, run.reply.result()["content"])

    @staticmethod
    async def _both(run: Run) -> None:
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
        """The kernel's completions of ``text`` at ``pos``; CompletionFailed if it is not
        ready, does not answer within ``complete_timeout`` or answers with an error."""
        if self._run is not None:
            # The kernel answers shell requests one at a time: it would not answer until the
            # running code finishes.
            return {"matches": [], "cursor_start": pos, "cursor_end": pos}
        if not self.ready:
            raise CompletionFailed(f"the kernel is not ready: {self.error or 'it is starting'}")
        msg_id = self.kc.complete(text, pos)
        fut = self._expect_reply(msg_id)
        try:
            reply = (await asyncio.wait_for(fut, self.complete_timeout))["content"]
        except TimeoutError:
            log.warning("no complete_reply within %g s", self.complete_timeout)
            raise CompletionFailed(
                f"the kernel did not answer complete_request within {self.complete_timeout:g} s"
            ) from None
        finally:
            self._replies.pop(msg_id, None)
        if reply.get("status", "ok") != "ok":
            what = f"{reply.get('ename', 'error')}: {reply.get('evalue', '')}"
            raise CompletionFailed(f"the kernel's completion failed: {what}")
        return {
            "matches": list(reply.get("matches", [])),
            "cursor_start": int(reply.get("cursor_start", pos)),
            "cursor_end": int(reply.get("cursor_end", pos)),
        }
