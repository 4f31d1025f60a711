"""The kernel actor: one per kernel; owns its state, its runs and its life.

Its life (create, restart, stop, recovery) is the hook list of :mod:`kernlet.actors.hooks`,
run by :class:`kernlet.actors.life.Life`; this module routes messages and runs users' code.
Every event goes through :meth:`KernelActor.record`: applied to the actor's own state, made
durable, and only then announced (agent registry, watcher, NATS) and acted on.
"""


from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pykka

from kernlet import logs
from kernlet.actors import steps
from kernlet.actors.base import LoopActor
from kernlet.actors.context import AgentContext
from kernlet.actors.life import Life
from kernlet.actors.messages import (
    Complete,
    ContainerDied,
    Create,
    Destroy,
    InjectedFault,
    Interrupt,
    KernelUpdated,
    Recover,
    Restart,
    RunCode,
    RunFinished,
    RunTimedOut,
    Shutdown,
    TriggerBatch,
)
from kernlet.actors.pool_take import AdoptTaken, HandOver, adopt_taken, hand_over
from kernlet.actors.reply import Reply
from kernlet.actors.runs import RunBook
from kernlet.errors import KernelNotRunning
from kernlet.events import (
    EventBody,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionTimeout,
    KernelState,
    SessionFailure,
    SessionSuccess,
    apply,
    can_execute,
    is_live,
    new_envelope,
)

log = logging.getLogger(__name__)


__all__ = ["KernelActor"]


class KernelActor(LoopActor):
    """Owns one kernel. Runs on its own pykka thread; I/O happens on the loop."""

    def __init__(
        self,
        ctx: AgentContext,
        agent: pykka.ActorRef[Any],
        kernel_id: str,
        state: KernelState | None = None,
    ) -> None:
        super().__init__(ctx.loop)
        self.ctx = ctx
        self.agent = agent
        self.kernel_id = kernel_id
        self.state = state
        self.runs = self.new_runbook()
        #: runs whose execution_started is recorded and whose end is not yet; of those, the
        #: batch jobs whose end is also a session event
        self.active_runs: set[str] = set()
        self.session_runs: set[str] = set()
        self.life = Life(self)

    # -- record, then act ---------------------------------------------------------------------

    def record(self, body: EventBody, then: Callable[[], None] | None = None) -> None:
        """Apply the event to this actor's state, append it durably; once it is in the log,
        announce it to the agent and continue with ``then``. A failed append crashes the
        actor (the supervisor rebuilds the kernel from what the log holds)."""
        env = new_envelope(self.kernel_id, (self.state.seq if self.state else 0) + 1, body)
        self.state = apply(self.state, env)
        state = self.state
        level = logging.DEBUG if body.TYPE.startswith("execution_") else logging.INFO

        def durable(_: Any) -> None:
            self.agent.tell(KernelUpdated(state))
            if then is not None:
                then()

        with logs.bound(run_id=getattr(body, "run_id", None) or None):
            log.log(level, "kernel %s #%d %s %s", self.kernel_id, env.seq, body.TYPE,
                    getattr(body, "reason", "") or getattr(body, "container_id", "")[:12])
            self.spawn(self.ctx.persist(env, lazy=_lazy(body)), then=durable)

    def new_runbook(self) -> RunBook:
        return RunBook(
            (steps.home_dirs(self.ctx.cfg, self.state) if self.state is not None
             else steps.kernel_dirs(self.ctx.cfg, self.kernel_id)).socket,
            self._on_run_finished, self._on_lost, self._on_run_timeout,
            output_limit=self.ctx.cfg.limits.run_output_buffer,
        )

    def on_start(self) -> None:
        """Runs first in this actor's own thread: everything logged from it, and from the
        steps it starts on the loop, carries the kernel's id (kernlet.logs)."""
        logs.bind(kernel_id=self.kernel_id)

    # -- messages --------------------------------------------------------------------------

    def handle(self, message: Any) -> Any:
        match message:
            case Create():
                self.life.create(message)
            case Destroy():
                self.life.destroy(message)
            case ContainerDied():
                self.life.container_died(message)
            case Restart():
                self.life.restart(message)
            case Recover():
                self.life.recover()
            case Shutdown():
                self.life.shutdown()
            case HandOver():
                hand_over(self, message)
            case AdoptTaken():
                adopt_taken(self, message)
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
                    self.record(ExecutionTimeout(run_id=message.run_id, timeout=message.timeout))
            case TriggerBatch():
                self._trigger_batch(message)
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
        if req.mode in ("query", "batch") and req.run_id not in self.active_runs:
            self.active_runs.add(req.run_id)
            self.record(ExecutionStarted(run_id=req.run_id, mode=req.mode, timeout=req.timeout))
        coro = self.runs.execute(
            req.run_id, req.mode, req.code, dict(req.opts), req.flush_timeout, msg.sink,
            req.timeout,
        )
        # answered from the loop: the caller waits on nothing this actor decides after this
        self.ctx.loop.submit(_answer(coro, msg.reply))

    def _trigger_batch(self, msg: TriggerBatch) -> None:
        """A background batch job: answer now, end with session_success / session_failure."""
        if not can_execute(self.state):
            msg.reply.error(KernelNotRunning(f"kernel {self.kernel_id} is not running"))
            return
        self.active_runs.add(msg.run_id)
        self.session_runs.add(msg.run_id)
        self.record(ExecutionStarted(run_id=msg.run_id, mode="batch", timeout=msg.timeout,
                                     session=True))
        coro = self.runs.execute(msg.run_id, "batch", "", {"exec": msg.code}, None, None,
                                 msg.timeout)

        def failed(err: BaseException) -> None:  # the kernel went away under the job
            if msg.run_id in self.session_runs and is_live(self.state):
                self.session_runs.discard(msg.run_id)
                self.record(SessionFailure(run_id=msg.run_id, reason="task-cancelled"))

        self.spawn(coro, then=lambda _: None, fail=failed)  # its end: _run_finished
        msg.reply.ok({"run_id": msg.run_id, "kernel_id": self.kernel_id})

    def _run_finished(self, msg: RunFinished) -> None:
        """A run ended (also one adopted after an agent restart): its execution_finished,
        and for a batch job its session_success or session_failure."""
        if msg.run_id in self.active_runs:
            self.active_runs.discard(msg.run_id)
            if is_live(self.state):
                self.record(ExecutionFinished(msg.run_id, msg.status, msg.exit_code))
        if msg.run_id in self.session_runs:
            self.session_runs.discard(msg.run_id)
            if not can_execute(self.state):
                return
            if msg.status == "finished" and msg.exit_code == 0:
                self.record(SessionSuccess(run_id=msg.run_id))
            else:
                reason = {"exec-timeout": "exec-timeout", "lost": "task-lost"}.get(
                    msg.status, "task-failed")
                self.record(SessionFailure(run_id=msg.run_id, reason=reason,
                                           exit_code=msg.exit_code))

    def _simple(self, reply: Reply, coro: Any, shape: Any) -> None:
        if not can_execute(self.state):
            coro.close()
            reply.error(KernelNotRunning(f"kernel {self.kernel_id} is not running"))
            return
        self.spawn(coro, then=lambda r: reply.ok(shape(r)), fail=reply.error)

    # -- from the loop (RunBook callbacks) ----------------------------------------------------

    def _tell_self(self, message: Any) -> None:
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            pass

    def _on_run_timeout(self, run_id: str, timeout: float) -> None:
        self._tell_self(RunTimedOut(run_id, timeout))

    def _on_run_finished(self, run_id: str, status: str, exit_code: int | None) -> None:
        self._tell_self(RunFinished(run_id, status, exit_code))

    def _on_lost(self) -> None:
        log.info("kernel %s: runtime channel lost", self.kernel_id)

    def on_failure(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        """Runs in this actor's thread after a handler raised; the actor then stops. Closes the
        runtime channel (waiting callers get an error at once); the agent actor rebuilds the
        kernel from its stream (see ``_SupervisedKernel``)."""
        log.error("kernel actor %s crashed: %r", self.kernel_id, exc_value)
        self.ctx.loop.submit(self.runs.close(f"kernel actor crashed: {exc_value}"))


async def _answer(coro: Coroutine[Any, Any, Any], reply: Reply) -> None:
    """On the loop: run an ``execute`` call and answer it there, without a hop through the
    kernel actor's mailbox and back (its result is the caller's; the actor hears the run's
    end from the RunBook as before)."""
    try:
        result = await coro
    except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - the caller hears every error
        reply.error(exc)
    else:
        reply.ok(result.to_wire())


def _lazy(body: EventBody) -> bool:
    """Whether an event's append may wait for company (docs/decisions.md, 2): a run's start
    and end, which nothing acts on; not the start of a batch job (its end after an agent
    restart depends on it), nor anything of the lifecycle."""
    if isinstance(body, ExecutionStarted):
        return not body.session
    return isinstance(body, ExecutionFinished)
