"""The interpreter of a kernel's hooks (:mod:`kernlet.actors.hooks`), in its actor's thread.

Read top to bottom, a kernel's life is::

    create:   record kernel_preparing
              for each hook of CREATE: [record before] → up → [record]   (each event durable
                                                                           before the next up)
              answer the caller                                           → RUNNING
    restart:  record kernel_restarting → down of the hooks from RESTART_FROM (reversed)
              → record kernel_creating (same holdings) → up of those hooks → answer
    stop:     record kernel_terminating (destroy, death, failed create) → wait for the step in
              flight (cancelled if it may be) → down of every hook that started, reversed
              → record kernel_terminated (reason, exit code) → answer → the actor stops
    recover:  (rebuilt from the log) re-adopt a running container, else stop

Where the kernel is in that sequence is :class:`Work`: explicit data beside the durable state,
one object, no flags spread over the actor. Every event goes through the actor's ``record``
(durable, then announced, then continued); every outside call is a coroutine on the loop
whose outcome comes back as a message (``LoopActor.spawn``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from kernlet.actors.create_errors import last_output, with_output
from kernlet.actors.hooks import CREATE, RESTART_FROM, Hook, HookEnv, creating_from_state
from kernlet.actors.hooks import hooks_from as _hooks_from
from kernlet.actors.messages import ContainerDied, Create, Destroy, KernelGone, Restart
from kernlet.actors.reply import error_dict
from kernlet.actors.work import Death, Phase, Work
from kernlet.errors import (
    CreationFailed,
    ImageNotFound,
    InsufficientResource,
    InvalidRequest,
    KernelNotRunning,
    RegistryAuthFailed,
)
from kernlet.events import (
    KernelPreparing,
    KernelRestarting,
    KernelTerminated,
    KernelTerminating,
    can_execute,
    in_creation,
    is_live,
    is_terminating,
)

if TYPE_CHECKING:
    from kernlet.actors.kernel import KernelActor

__all__ = ["Life", "Phase", "Work"]

log = logging.getLogger(__name__)


class Life:
    """Runs the hooks of one kernel; called only from its actor's thread."""

    def __init__(self, actor: KernelActor) -> None:
        self.k = actor
        self.w = Work()

    # -- the step in flight -----------------------------------------------------------------

    def _env(self, reason: str = "") -> HookEnv:
        k = self.k
        assert k.state is not None
        return HookEnv(kernel_id=k.kernel_id, ctx=k.ctx, agent=k.agent, runs=k.runs,
                       state=k.state, facts=MappingProxyType(dict(self.w.facts)),
                       reason=reason, started=self.w.t0)

    def step(self, name: str, coro: Coroutine[Any, Any, Any], then: Callable[[Any], None],
              fail: Callable[[BaseException], None] | None = None, cancellable: bool = True,
              keep: Callable[[Any], None] | None = None) -> None:
        """Run ``coro``; on its outcome continue with ``then`` (or ``fail``, by default the
        create's failure), unless a stop came meanwhile: then the teardown goes on. ``keep``
        sees the result in any case (a container made while a stop was pending must be
        known to the undo)."""
        w = self.w

        def settle() -> bool:
            w.inflight, w.step = None, ""
            if w.phase is Phase.STOPPING:
                self._maybe_teardown()
                return False
            return True

        def ok(result: Any) -> None:
            if keep is not None:
                keep(result)
            if settle():
                then(result)

        def failed(err: BaseException) -> None:
            if settle():
                (fail or self._create_failed)(err)

        w.step, w.cancellable = name, cancellable
        w.inflight = self.k.spawn(coro, then=ok, fail=failed)

    # -- create and restart -----------------------------------------------------------------

    def create(self, msg: Create) -> None:
        w = self.w
        w.create_done, w.t0, w.phase = msg.done, time.monotonic(), Phase.CREATING
        self.k.record(KernelPreparing(session_id=msg.session_id, image=msg.image,
                                      config=msg.config),
                      then=lambda: self._next(CREATE, 0))

    def _next(self, hooks: Sequence[Hook], i: int) -> None:
        if self.w.phase is Phase.STOPPING:
            self._maybe_teardown()
            return
        if i == len(hooks):
            self._created()
            return
        before = hooks[i].before(self._env())
        if before is not None:
            self.k.record(before, then=lambda: self._up(hooks, i))
        else:
            self._up(hooks, i)

    def _up(self, hooks: Sequence[Hook], i: int) -> None:
        if self.w.phase is Phase.STOPPING:
            self._maybe_teardown()
            return
        hook = hooks[i]
        if hook.name not in self.w.started:
            self.w.started.append(hook.name)

        def ran(fact: Any) -> None:
            event = hook.record(self._env(), fact)
            if event is None:
                self._next(hooks, i + 1)
            else:
                self.k.record(event, then=lambda: self._next(hooks, i + 1))

        def keep(fact: Any) -> None:
            self.w.facts[hook.name] = fact

        self.step(hook.name, hook.up(self._env()), then=ran, cancellable=hook.cancellable,
                   keep=keep)

    def _created(self) -> None:
        assert self.k.state is not None
        self.w.phase = Phase.RUNNING
        self.w.replaced = ""
        self.answer_create({"ok": True, **self.k.state.info})

    def _create_failed(self, err: BaseException) -> None:
        log.warning("kernel %s: creation failed: %s", self.k.kernel_id, err)
        # (a registry's refusal of the credentials stays typed: the operator's fix differs)
        if not isinstance(err, (ImageNotFound, InvalidRequest, InsufficientResource,
                                RegistryAuthFailed)):
            err = CreationFailed(f"kernel {self.k.kernel_id}: {err}")
        self.w.failure = err
        if is_live(self.k.state) and not is_terminating(self.k.state):
            self._stop("failed-to-create")

    def restart(self, msg: Restart) -> None:
        k, w = self.k, self.w
        if not can_execute(k.state) or w.phase is not Phase.RUNNING:
            msg.reply.error(KernelNotRunning(f"kernel {k.kernel_id} is not running"))
            return
        assert k.state is not None
        w.restart_reply, w.t0, w.phase = msg.reply, time.monotonic(), Phase.RESTARTING
        w.replaced = k.state.container_id
        hooks = _hooks_from(RESTART_FROM)

        def recreate(_: Any) -> None:
            assert k.state is not None
            k.runs = k.new_runbook()
            k.record(creating_from_state(k.state), then=lambda: self._next(hooks, 0))

        k.record(KernelRestarting(), then=lambda: self.step(
            "restart", _downs(hooks, self._env("restarting")), then=recreate))

    def answer_create(self, result: dict[str, Any]) -> None:
        w = self.w
        done, w.create_done = w.create_done, None
        if done is not None:
            done({"id": self.k.kernel_id, **result})
        if w.restart_reply is not None:
            reply, w.restart_reply = w.restart_reply, None
            if result.get("ok"):
                reply.ok({"id": self.k.kernel_id, **result})
            else:
                reply.error(KernelNotRunning(f"restart failed: {result.get('error')}"))

    # -- stop: destroy, death, failure ------------------------------------------------------

    def destroy(self, msg: Destroy) -> None:
        if msg.reply is not None:
            self.w.waiters.append(msg.reply)
        if not is_live(self.k.state):
            self._finish()
            return
        if is_terminating(self.k.state) or self.w.phase in (Phase.STOPPING,
                                                            Phase.TEARING_DOWN):
            return  # already on its way (or Recover will finish it); the reply waits
        self._stop(msg.reason)

    def container_died(self, msg: ContainerDied) -> None:
        k, w = self.k, self.w
        if k.state is None or w.phase in (Phase.TEARING_DOWN, Phase.DONE):
            return
        if msg.container_id == w.replaced or msg.container_id not in (
                k.state.container_id, w.facts.get("container")):
            return  # an old container (e.g. replaced by a restart)
        if msg.action == "oom":
            w.death.oom = True
        if msg.exit_code is not None:
            w.death.exit_code = msg.exit_code
        if w.phase is Phase.STOPPING or not is_live(k.state) or is_terminating(k.state):
            return
        reason = "oom-killed" if w.death.oom else (
            "container-not-found" if msg.action == "destroy" else "self-terminated")
        if in_creation(k.state):
            w.failure = CreationFailed(
                f"kernel {k.kernel_id}: the container {msg.action} during start "
                f"(exit code {msg.exit_code})")
            reason = "failed-to-create"
        self._stop(reason)

    def _stop(self, reason: str) -> None:
        """Record kernel_terminating; the teardown starts once it is durable and no step is
        in flight (a cancellable one is cancelled)."""
        w = self.w
        w.phase, w.stop_durable = Phase.STOPPING, False

        def durable() -> None:
            w.stop_durable = True
            self._maybe_teardown()

        self.k.record(KernelTerminating(reason=reason), then=durable)
        if w.inflight is not None and w.cancellable:
            w.inflight.cancel()

    def _maybe_teardown(self) -> None:
        w = self.w
        if w.phase is Phase.STOPPING and w.stop_durable and w.inflight is None:
            self._teardown()

    def _teardown(self) -> None:
        state = self.k.state
        assert state is not None
        self.w.phase = Phase.TEARING_DOWN
        started = self.w.started or [h.name for h in CREATE]  # rebuilt: undo everything
        hooks = [h for h in CREATE if h.name in started]
        env, ctx = self._env(state.reason), self.k.ctx
        # a failed create's container is about to go: keep its last words for the error
        container = state.container_id or self.w.facts.get("container", "")
        keep_output = isinstance(self.w.failure, CreationFailed) and bool(container)

        async def run() -> tuple[dict[str, Any], str]:
            async with ctx.teardown_slots:  # a mass reset runs in waves
                output = await last_output(ctx.docker, container) if keep_output else ""
                return await _downs(hooks, env), output

        self.k.spawn(run(), then=self._torn_down, fail=self._teardown_failed)

    def _teardown_failed(self, err: BaseException) -> None:
        """Retry with backoff: a kernel is only recorded terminated once it is clean."""
        w = self.w
        w.teardown_tries += 1
        delay = min(30.0, 0.5 * 2**w.teardown_tries)
        log.error("kernel %s: teardown failed (try %d, again in %.1f s): %s",
                  self.k.kernel_id, w.teardown_tries, delay, err)
        for reply in w.waiters:
            reply.error(err)
        w.waiters.clear()
        self.k.spawn(asyncio.sleep(delay), then=lambda _: self._teardown())

    def _torn_down(self, outcome: tuple[dict[str, Any], str]) -> None:
        results, output = outcome
        state, death = self.k.state, self.w.death
        assert state is not None
        if output and isinstance(self.w.failure, CreationFailed):
            self.w.failure = CreationFailed(with_output(self.w.failure.message, output))
        exit_code = results.get("container")
        if death.exit_code is not None and state.reason != "user-requested":
            exit_code = death.exit_code
        reason = "oom-killed" if death.oom and state.reason != "failed-to-create" else (
            state.reason)
        self.k.record(KernelTerminated(reason=reason, exit_code=exit_code), then=self._finish)

    def _finish(self) -> None:
        k, w = self.k, self.w
        w.phase = Phase.DONE
        state = k.state
        for reply in w.waiters:
            reply.ok({"id": k.kernel_id, "reason": state.reason if state else "",
                      "exit_code": state.exit_code if state else None})
        w.waiters.clear()
        if w.create_done is not None or w.restart_reply is not None:
            err = w.failure or KernelNotRunning(
                f"kernel {k.kernel_id} terminated during creation "
                f"({state.reason if state else 'unknown'})")
            self.answer_create({"ok": False, "error": error_dict(err)})
        k.agent.tell(KernelGone(k.kernel_id))
        k.stop()

    # -- recovery and shutdown --------------------------------------------------------------

    def recover(self) -> None:
        """Rebuilt from the log after an agent restart: re-adopt, or finish what was begun."""
        k, w = self.k, self.w
        s = k.state
        assert s is not None
        if w.phase is not Phase.NEW:
            return  # a destroy came first and is on its way
        if is_terminating(s):
            w.phase, w.stop_durable = Phase.STOPPING, True  # mid-destroy: finish it
            self._maybe_teardown()
            return
        if in_creation(s):  # mid-creation kernels are rolled back
            self._stop("agent-restarted-during-creation")
            return
        w.phase = Phase.RUNNING
        runs = k.runs
        if s.current_run:  # the run goes on: its end is recorded as if no restart happened
            k.active_runs.add(s.current_run)
            if s.run_session:
                k.session_runs.add(s.current_run)
        left = None if s.run_timeout is None else max(
            0.0, s.run_timeout - (time.time() - s.run_started_at))

        async def check() -> dict[str, Any]:
            if s.current_run:  # its output is still buffered in the runtime: collect it again
                runs.adopt(s.current_run, s.run_mode or "query", s.run_timeout, left)
            info = await k.ctx.docker.inspect(s.container_id)
            if not info.running:
                return {"running": False, "exit_code": info.exit_code, "oom": info.oom_killed}
            status = await runs.connect(timeout=15.0)
            runs.settle_adopted(status.get("busy"))
            return {"running": True, "status": status}

        def checked(result: dict[str, Any]) -> None:
            if result["running"]:
                log.info("kernel %s re-adopted", k.kernel_id)
                return
            w.death = Death(bool(result.get("oom")), result.get("exit_code"))
            self._stop("oom-killed" if w.death.oom else "self-terminated")

        def missing(err: BaseException) -> None:
            reason = "container-not-found" if "ContainerNotFound" in type(err).__name__ else (
                f"unrecoverable: {err}")
            log.warning("kernel %s: %s", k.kernel_id, err)
            self._stop(reason[:128])

        self.step("recover", check(), then=checked, fail=missing)

    def shutdown(self) -> None:
        """Agent exit: keep the container; just close the runtime channel."""
        k = self.k
        k.spawn(k.runs.channel.close(), then=lambda _: k.stop(), fail=lambda _: k.stop())


async def _downs(hooks: Sequence[Hook], env: HookEnv) -> dict[str, Any]:
    """The down of each hook, last first; what each returned, by name."""
    results: dict[str, Any] = {}
    for hook in reversed(hooks):
        results[hook.name] = await hook.down(env)
    return results
