"""The kernel actor: one per kernel, deciding its lifecycle; every transition logged first.

Create, in order (each arrow is a step on the loop whose outcome returns as a message)::

    record preparing → inspect image → prepare dirs → record creating (allocation, scratch)
      → create container → record container_created (id in the log BEFORE start)
      → start + wait for the runtime → record started → answer the caller

Destroy: record terminating → close runs → stop (grace, then kill) → remove containers and
dirs → record terminated (reason, exit code) → answer → actor stops. A destroy that arrives
while a step is in flight is recorded at once; the step's outcome then leads to the teardown
instead of the next step. Container death (Docker event) takes the same teardown path.
Restart keeps allocation and scratch: record restarting → remove container → record creating
→ the create path from "create container" on.
"""


from __future__ import annotations

import logging
from typing import Any

from kernlet.actors.kernel_create import CreateSteps
from kernlet.actors.kernel_end import EndSteps
from kernlet.actors.messages import (
    Allocated,
    Complete,
    ContainerDied,
    Create,
    Destroy,
    InjectedFault,
    Interrupt,
    Recover,
    Restart,
    RunCode,
    RunFinished,
    RunTimedOut,
    Shutdown,
    TriggerBatch,
)
from kernlet.actors.reply import Reply
from kernlet.errors import (
    KernelNotRunning,
)
from kernlet.events import (
    ExecutionFinished,
    ExecutionStarted,
    ExecutionTimeout,
    SessionFailure,
    SessionSuccess,
    can_execute,
    is_live,
)

log = logging.getLogger(__name__)


__all__ = ["KernelActor"]


class KernelActor(CreateSteps, EndSteps):
    """Owns one kernel: routes its messages to the create, run and end steps."""

    # -- messages --------------------------------------------------------------------------

    def handle(self, message: Any) -> Any:
        match message:
            case Create():
                self._create(message)
            case Destroy():
                self._destroy(message)
            case RunCode():
                self._run_code(message)
            case Interrupt():
                self._simple(message.reply, self.runs.interrupt(), lambda _: {"interrupted": True})
            case Complete():
                self._simple(message.reply, self.runs.complete(message.text, message.pos), dict)
            case RunFinished():
                self._run_finished(message)
            case RunTimedOut():
                if can_execute(self.state):
                    self._record(ExecutionTimeout(run_id=message.run_id, timeout=message.timeout))
            case TriggerBatch():
                self._trigger_batch(message)
            case ContainerDied():
                self._container_died(message)
            case Restart():
                self._restart(message)
            case Recover():
                self._recover()
            case Shutdown():
                self._shutdown()
            case Allocated():
                self._allocated(message)
            case InjectedFault():
                raise RuntimeError(f"injected fault in kernel actor {self.kernel_id}")
            case _:
                log.warning("kernel %s: unknown message %r", self.kernel_id, message)

    # -- run code -----------------------------------------------------------------------------

    def _run_code(self, msg: RunCode) -> None:
        req = msg.request
        if not can_execute(self.state):
            where = self.state.state.value if self.state else "unknown"
            msg.reply.error(KernelNotRunning(f"kernel {self.kernel_id} is {where}"))
            return
        if req.mode in ("query", "batch") and req.run_id not in self._active_runs:
            self._active_runs.add(req.run_id)
            self._record(ExecutionStarted(run_id=req.run_id, mode=req.mode))
        coro = self.runs.execute(
            req.run_id, req.mode, req.code, dict(req.opts), req.flush_timeout, msg.sink,
            req.timeout,
        )
        self.spawn(coro, then=lambda r: msg.reply.ok(r.to_wire()), fail=msg.reply.error)

    def _trigger_batch(self, msg: TriggerBatch) -> None:
        """A background batch job: answer now, end with session_success / session_failure."""
        if not can_execute(self.state):
            msg.reply.error(KernelNotRunning(f"kernel {self.kernel_id} is not running"))
            return
        self._active_runs.add(msg.run_id)
        self._record(ExecutionStarted(run_id=msg.run_id, mode="batch"))
        coro = self.runs.execute(msg.run_id, "batch", "", {"exec": msg.code}, None, None,
                                 msg.timeout)

        def ended(result: Any) -> None:
            if not can_execute(self.state):
                return
            if result.status == "finished" and result.exit_code == 0:
                self._record(SessionSuccess(run_id=msg.run_id))
            else:
                reason = "exec-timeout" if result.status == "exec-timeout" else "task-failed"
                self._record(SessionFailure(run_id=msg.run_id, reason=reason,
                                            exit_code=result.exit_code))

        def failed(err: BaseException) -> None:
            if is_live(self.state):
                self._record(SessionFailure(run_id=msg.run_id, reason="task-cancelled"))

        self.spawn(coro, then=ended, fail=failed)
        msg.reply.ok({"run_id": msg.run_id, "kernel_id": self.kernel_id})

    def _run_finished(self, msg: RunFinished) -> None:
        if msg.run_id in self._active_runs:
            self._active_runs.discard(msg.run_id)
            if is_live(self.state):
                self._record(ExecutionFinished(msg.run_id, msg.status, msg.exit_code))

    def _simple(self, reply: Reply, coro: Any, shape: Any) -> None:
        if not can_execute(self.state):
            coro.close()
            reply.error(KernelNotRunning(f"kernel {self.kernel_id} is not running"))
            return
        self.spawn(coro, then=lambda r: reply.ok(shape(r)), fail=reply.error)

    def on_failure(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        """Runs in this actor's thread after a handler raised; the actor then stops. Closes the
        runtime channel (waiting callers get an error at once); the agent actor rebuilds the
        kernel from its stream (see ``_SupervisedKernel``)."""
        log.error("kernel actor %s crashed: %r", self.kernel_id, exc_value)
        self.ctx.loop.submit(self.runs.close(f"kernel actor crashed: {exc_value}"))
