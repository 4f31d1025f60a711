"""Loop-side relay of code runs between callers and one kernel's runtime.

One :class:`RunBook` per kernel. It owns the runtime channel, keeps the output of the current
run that no caller has collected yet, and answers ``execute`` calls the way the reference does
(status finished / continued / waiting-input / build-finished / clean-finished, console items,
exit code), or streams each item to a sink as soon as it arrives. Output never passes through
an actor: it goes from the socket straight to the caller. The kernel actor hears only that a
run finished (``on_finished``) and that the channel was lost (``on_lost``).

Output is bounded per run (``output_limit`` bytes, ``limits.run-output-buffer``): past it the
channel stops reading the socket until a caller takes the output (a batched call waiting
returns ``continued`` at once), so a slow sink or a caller that does not collect holds back
the runtime (whose own bounded outbox slows batch commands or
drops query output, with a note) instead of growing the agent. The agent drops output itself
only where holding back cannot work: a run that a later run waits for (nobody collects it) is
not held, and while a request's reply is awaited the channel reads on, up to twice the bound.
Then the oldest output goes, and one stderr item in the run's console, ``[kernlet: N bytes of
output were dropped: ...]``, says how much (the shape of the runtime's own note).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernlet.drivers.runtime import RuntimeChannel
from kernlet.errors import KernelNotRunning, RuntimeUnavailable

__all__ = ["DEFAULT_OUTPUT_LIMIT", "OUTPUT_TYPES", "RunBook", "RunResult", "output_size"]

log = logging.getLogger(__name__)

#: runtime message types that are console output of a run
#: console item types: the reference's, and the jupyter shape's iopub types
OUTPUT_TYPES = frozenset({"stdout", "stderr", "media", "html", "log", "stream", "display_data",
                          "execute_result", "update_display_data", "clear_output", "error",
                          "execute_input"})
_STEP_STOPS = {"build-finished", "clean-finished"}
_STOPS = {"finished", "waiting-input", *_STEP_STOPS}
#: output types the agent may drop (as the runtime's outbox: not ``log``, never the stops)
_DROPPABLE = frozenset({"stdout", "stderr", "media", "html", "stream", "display_data",
                        "execute_result", "update_display_data"})
DEFAULT_OUTPUT_LIMIT = 8 * 1024 * 1024
#: largest batch of items handed to a sink at once (one NATS message each)
SINK_BATCH = 256 * 1024
_OVERHEAD = 64


def output_size(kind: str, data: Any) -> int:
    """Bytes counted for one console item (as the runtime's outbox counts a message)."""
    if isinstance(data, dict):
        data = data.get("data", data.get("text"))
    if isinstance(data, dict):  # a jupyter-shape MIME bundle
        return sum(len(v) for v in data.values() if isinstance(v, str)) + _OVERHEAD
    return (len(data) if isinstance(data, str | bytes) else 0) + _OVERHEAD

Sink = Callable[[list[list[Any]]], Awaitable[None]]


@dataclass
class _Run:
    run_id: str
    mode: str
    console: list[list[Any]] = field(default_factory=list)
    status: str = "running"
    exit_code: int | None = None
    #: set whenever something new arrives (output or a status change)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: the run exceeded its time limit and was interrupted
    timed_out: bool = False
    #: bytes of console output no caller has taken yet
    buffered: int = 0
    #: a later run waits for this one: drop its output past the bound instead of holding it
    spill: bool = False
    #: bytes dropped from the console in all; the stderr item saying so, and its bytes
    dropped: int = 0
    note: list[Any] | None = None
    noted: int = 0

    @property
    def exit_code_known(self) -> bool:
        return self.status == "finished"


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: str
    status: str
    exit_code: int | None
    console: list[list[Any]]

    def to_wire(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "status": self.status,
            "exitCode": self.exit_code,
            "console": self.console,
        }


class RunBook:
    """Runs of one kernel. All methods run on the agent's event loop."""

    def __init__(
        self,
        socket_path: Path,
        on_finished: Callable[[str, str, int | None], None],
        on_lost: Callable[[], None],
        on_timeout: Callable[[str, float], None] = lambda _run, _t: None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
    ) -> None:
        self.channel = RuntimeChannel(socket_path, self._on_message, on_lost)
        self.output_limit = output_limit
        #: the run whose full console paused the channel
        self._holding: _Run | None = None
        self._on_finished = on_finished
        self._on_timeout = on_timeout
        self._watchdogs: set[asyncio.Task[None]] = set()
        self._runs: dict[str, _Run] = {}
        self._order: list[str] = []
        #: runs taken over from before an agent restart, until ``settle_adopted``
        self._adopted: set[str] = set()
        self._closed: str | None = None

    async def connect(self, timeout: float) -> dict[str, Any]:
        return await self.channel.connect(timeout)

    def _on_message(self, msg: dict[str, Any]) -> None:
        run = self._runs.get(str(msg.get("run_id")))
        if run is None:
            return
        kind = str(msg.get("t"))
        data = msg.get("data")
        if kind in OUTPUT_TYPES:
            run.console.append([kind, data])
            run.buffered += output_size(kind, data)
            if run.buffered > self.output_limit:
                if run.spill or run.buffered > 2 * self.output_limit:
                    self._drop_oldest(run)
                else:
                    self._holding = run
                    self.channel.pause()
        elif kind in _STOPS:
            code = data.get("exitCode") if isinstance(data, dict) else None
            run.status = kind
            if kind == "waiting-input":
                run.console.append(["waiting-input", data])
            elif kind != "finished":
                run.console.append([kind, data])
            if kind == "finished":
                run.exit_code = code
                run.done.set()
                self._on_finished(run.run_id, "exec-timeout" if run.timed_out else "finished",
                                  code)
        run.changed.set()

    def adopt(self, run_id: str, mode: str, timeout: float | None = None,
              left: float | None = None) -> None:
        """Track a run started before an agent restart, so its output is collected again;
        its time limit (``timeout``) still holds, ``left`` seconds from now."""
        if run_id not in self._runs:
            run = self._start(run_id, mode)
            self._adopted.add(run_id)
            if timeout is not None:
                self._guard(run, timeout, timeout if left is None else left)

    def settle_adopted(self, busy: str | None) -> None:
        """After reconnecting: an adopted run the runtime no longer runs ended while no agent
        listened (its end was sent to the old connection); close it as ``lost``. Only adopted
        runs: a run started since (an execute that came while the kernel was being re-adopted)
        may be finished already, its end not yet read, and is the runtime's to end."""
        adopted, self._adopted = self._adopted, set()
        for run_id in [r for r in self._order if r in adopted]:
            run = self._runs[run_id]
            if run_id != busy and not run.done.is_set():
                run.status = "finished"
                run.done.set()
                run.changed.set()
                self._on_finished(run_id, "lost", None)

    async def execute(
        self,
        run_id: str,
        mode: str,
        code: str,
        opts: dict[str, Any],
        flush_timeout: float | None,
        sink: Sink | None,
        timeout: float | None = None,
    ) -> RunResult:
        """One execute call; returns when the run stops, waits for input, or flush_timeout.

        ``timeout`` limits the run itself (from when it starts): past it the run is
        interrupted and the call answers ``exec-timeout``; the kernel stays usable."""
        if self._closed is not None:
            raise KernelNotRunning(self._closed)
        run = self._runs.get(run_id)
        if mode in ("query", "batch") and (run is None or run.done.is_set()):
            run = self._start(run_id, mode)
            previous = [r for r in self._order[:-1] if not self._runs[r].done.is_set()]
            for other in previous:  # one run at a time: wait for the ones before
                self._unblock(self._runs[other])
                await self._runs[other].done.wait()
            msg: dict[str, Any] = {"op": "execute", "run_id": run_id, "mode": mode}
            if mode == "query":
                msg["code"] = code
                query_opts = {k: opts[k] for k in ("output", "stdin") if opts.get(k)}
                if query_opts:
                    msg["opts"] = query_opts
            else:
                msg["opts"] = opts
            await self._send(msg)
            if timeout is not None:
                self._guard(run, timeout, timeout)
        elif run is None:
            raise KernelNotRunning(f"no run {run_id!r} to {mode} on this kernel")
        elif mode == "input":
            run.status = "running"
            await self._send({"op": "input", "run_id": run_id, "text": code})
        return await self._collect(run, flush_timeout, sink)

    def _take(self, run: _Run, max_bytes: int | None = None) -> list[list[Any]]:
        """Remove the run's console items, oldest first (about ``max_bytes`` of them)."""
        if max_bytes is None:
            items, run.console = run.console, []
            run.buffered = 0
        else:
            taken, count = 0, 0
            for kind, data in run.console:
                if count and taken >= max_bytes:
                    break
                taken += output_size(kind, data)
                count += 1
            items, run.console = run.console[:count], run.console[count:]
            run.buffered = max(0, run.buffered - taken)
        if run.note is not None and any(item is run.note for item in items):
            run.note, run.noted = None, 0  # taken: later drops get a note of their own
        if self._holding is run and run.buffered <= self.output_limit:
            self._holding = None
            self.channel.resume()
        return items

    def _unblock(self, run: _Run) -> None:
        """A later run waits for ``run``: stop holding the channel for its output."""
        run.spill = True
        if run.buffered > self.output_limit:
            self._drop_oldest(run)

    def _drop_oldest(self, run: _Run) -> None:
        """Drop the oldest droppable output down to 3/4 of the bound; a stderr note in the
        place of the first says how much (one note until a caller takes it)."""
        target = self.output_limit * 3 // 4
        kept: list[list[Any]] = []
        dropped = 0
        for item in run.console:
            if item is not run.note and item[0] in _DROPPABLE and run.buffered > target:
                size = output_size(item[0], item[1])
                run.buffered -= size
                dropped += size
                if run.note is None:
                    run.note = ["stderr", ""]
                    kept.append(run.note)
                    run.buffered += _OVERHEAD
                continue
            kept.append(item)
        run.console = kept
        run.dropped += dropped
        run.noted += dropped
        if run.note is not None:
            run.note[1] = (f"\n[kernlet: {run.noted} bytes of output were dropped: "
                           "the agent's buffer for this run (limits.run-output-buffer) "
                           "was full]\n")
        if self._holding is run and run.buffered <= self.output_limit:
            self._holding = None
            self.channel.resume()

    def _guard(self, run: _Run, timeout: float, left: float) -> None:
        task = asyncio.create_task(self._watchdog(run, timeout, left))
        self._watchdogs.add(task)
        task.add_done_callback(self._watchdogs.discard)

    async def _watchdog(self, run: _Run, timeout: float, left: float) -> None:
        try:
            await asyncio.wait_for(run.done.wait(), left)
        except TimeoutError:
            run.timed_out = True
            run.changed.set()
            self._on_timeout(run.run_id, timeout)
            try:
                await self.channel.send({"op": "interrupt"})
            except RuntimeUnavailable as exc:
                log.warning("could not interrupt timed-out run %s: %s", run.run_id, exc)

    def _start(self, run_id: str, mode: str) -> _Run:
        run = _Run(run_id=run_id, mode=mode)
        if run_id in self._runs:
            self._order.remove(run_id)
        self._runs[run_id] = run
        self._order.append(run_id)
        # keep the book small: forget collected, finished runs
        while len(self._order) > 32 and self._runs[self._order[0]].done.is_set():
            self._runs.pop(self._order.pop(0))
        return run

    async def _send(self, msg: dict[str, Any]) -> None:
        try:
            await self.channel.send(msg)
        except RuntimeUnavailable:
            await self.channel.connect(timeout=5.0)
            await self.channel.send(msg)

    async def _collect(
        self, run: _Run, flush_timeout: float | None, sink: Sink | None
    ) -> RunResult:
        deadline = None if flush_timeout is None else time.monotonic() + flush_timeout
        while True:
            while sink is not None and run.console:
                await sink(self._take(run, SINK_BATCH))
            if self._closed is not None and not run.exit_code_known:
                raise KernelNotRunning(self._closed)
            if sink is not None and run.status in _STEP_STOPS:
                run.status = "running"  # a streaming caller waits for the whole run
            if run.timed_out:
                status = "exec-timeout"
                break
            if run.done.is_set() or run.status in _STOPS:
                status = run.status
                if status != "finished":
                    run.status = "running"
                break
            run.changed.clear()
            timeout = None if deadline is None else deadline - time.monotonic()
            if (timeout is not None and timeout <= 0) or self._holding is run:
                # flush timeout, or the output is at the bound: the caller takes it and
                # calls again (waiting on would hold the run and this call forever)
                status = "continued"
                break
            try:
                await asyncio.wait_for(run.changed.wait(), timeout)
            except TimeoutError:
                pass
        items = self._take(run)
        return RunResult(run.run_id, status, run.exit_code if run.done.is_set() else None, items)

    async def interrupt(self) -> None:
        await self._send({"op": "interrupt"})

    async def complete(self, text: str, pos: int | None) -> dict[str, Any]:
        msg: dict[str, Any] = {"op": "complete", "text": text}
        if pos is not None:
            msg["pos"] = pos
        reply = await self.channel.request(msg, timeout=10.0)
        return dict(reply.get("data") or {})

    async def close(self, reason: str) -> None:
        """The kernel is gone: fail every waiting caller with KernelNotRunning."""
        self._closed = f"kernel terminated ({reason})"
        for task in list(self._watchdogs):
            task.cancel()
        for run in self._runs.values():
            run.changed.set()
            run.done.set()
        self._holding = None
        await self.channel.close()
