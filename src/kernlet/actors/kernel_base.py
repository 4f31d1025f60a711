"""The kernel actor's state and plumbing, shared by its steps (create, end) and itself.

Every transition goes through :meth:`KernelBase._record` (apply, then append durably, then
continue); every outside step through :meth:`KernelBase._step`, whose outcome comes back as a
message and is dropped for the teardown if a destroy arrived meanwhile.
"""


from __future__ import annotations

import concurrent.futures
import logging
from typing import Any

import pykka

from kernlet.actors import steps
from kernlet.actors.base import LoopActor
from kernlet.actors.context import AgentContext
from kernlet.actors.messages import (
    KernelUpdated,
    RunFinished,
    RunTimedOut,
)
from kernlet.actors.reply import Reply
from kernlet.actors.runs import RunBook
from kernlet.events import (
    EventBody,
    KernelState,
    apply,
    is_terminating,
    new_envelope,
)
from kernlet.runner.services import ServicePort

log = logging.getLogger(__name__)


__all__ = ["KernelBase"]


class KernelBase(LoopActor):
    """State of one kernel actor. Runs on its own pykka thread; I/O happens on the loop."""

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
        self.runs = self._new_runbook()
        self._create_done: Any = None
        self._waiters: list[Reply] = []
        self._restart_reply: Reply | None = None
        self._active_runs: set[str] = set()
        self._inflight: concurrent.futures.Future[Any] | None = None
        #: a container created while a destroy was pending (its id never reached the log)
        self._stray_container = ""
        self._oom = False
        self._died_exit: int | None = None
        self._tearing_down = False
        self._teardown_tries = 0
        self._create_started = 0.0
        #: whether the step in flight may be cancelled by a destroy (never a docker create)
        self._cancellable = False
        self._failure: BaseException | None = None
        #: the image's declared service ports, and what the agent allocated (create only)
        self._service_ports: list[ServicePort] = []
        self._allocation: Any = None
        self._ports: tuple[int, ...] = ()

    # -- plumbing ------------------------------------------------------------------------

    def _record(self, body: EventBody, then: Any = None) -> None:
        """Apply the event to the state, append it durably, then continue with ``then``."""
        env = new_envelope(self.kernel_id, (self.state.seq if self.state else 0) + 1, body)
        self.state = apply(self.state, env)
        level = logging.DEBUG if body.TYPE.startswith("execution_") else logging.INFO
        log.log(level, "kernel %s #%d %s %s", self.kernel_id, env.seq, body.TYPE,
                 getattr(body, "reason", "") or getattr(body, "container_id", "")[:12])
        self.agent.tell(KernelUpdated(self.state))
        self.spawn(self.ctx.persist(env), then=lambda _: then() if then else None)

    def _step(self, coro: Any, then: Any, fail: Any = None, cancellable: bool = True) -> None:
        self._cancellable = cancellable
        self._inflight = self.spawn(coro, then=self._guard(then), fail=self._guard_fail(fail))

    def _guard(self, then: Any) -> Any:
        """Continue with ``then`` unless a destroy arrived meanwhile: then tear down."""

        def step(result: Any) -> None:
            self._inflight = None
            if is_terminating(self.state):
                self._teardown()
                return
            then(result)

        return step

    def _guard_fail(self, fail: Any) -> Any:
        def step(err: BaseException) -> None:
            self._inflight = None
            if is_terminating(self.state):
                self._teardown()
                return
            (fail or self._create_failed)(err)

        return step

    def _new_runbook(self) -> RunBook:
        return RunBook(
            steps.kernel_dirs(self.ctx.cfg, self.kernel_id).socket,
            self._on_run_finished, self._on_lost, self._on_run_timeout,
        )

    def _on_run_timeout(self, run_id: str, timeout: float) -> None:
        # loop thread: hand over to the actor
        try:
            self.actor_ref.tell(RunTimedOut(run_id, timeout))
        except pykka.ActorDeadError:
            pass

    def _on_run_finished(self, run_id: str, status: str, exit_code: int | None) -> None:
        # loop thread: hand over to the actor
        try:
            self.actor_ref.tell(RunFinished(run_id, status, exit_code))
        except pykka.ActorDeadError:
            pass

    def _on_lost(self) -> None:
        log.info("kernel %s: runtime channel lost", self.kernel_id)

    # -- implemented by the step mixins -----------------------------------------------------

    def _teardown(self) -> None:
        raise NotImplementedError

    def _create_failed(self, err: BaseException) -> None:
        raise NotImplementedError

    def _create_container(self) -> None:
        raise NotImplementedError

    def _answer_create(self, result: dict[str, Any]) -> None:
        raise NotImplementedError
