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

import asyncio
import concurrent.futures
import logging
import time
from typing import Any

import pykka

from kernlet.actors import steps
from kernlet.actors.base import LoopActor
from kernlet.actors.context import AgentContext
from kernlet.actors.messages import (
    Allocate,
    Allocated,
    Complete,
    ContainerDied,
    Create,
    Destroy,
    InjectedFault,
    Interrupt,
    KernelGone,
    KernelUpdated,
    Recover,
    Release,
    Restart,
    RunCode,
    RunFinished,
    RunTimedOut,
    Shutdown,
    TriggerBatch,
)
from kernlet.actors.reply import Reply, error_dict
from kernlet.actors.runs import RunBook
from kernlet.errors import (
    CreationFailed,
    ImageNotFound,
    InsufficientResource,
    InvalidRequest,
    KernelNotRunning,
    KernletError,
)
from kernlet.events import (
    ContainerCreated,
    EventBody,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionTimeout,
    KernelCreating,
    KernelPreparing,
    KernelPulling,
    KernelRestarting,
    KernelStarted,
    KernelState,
    KernelTerminated,
    KernelTerminating,
    SessionFailure,
    SessionSuccess,
    State,
    apply,
    can_execute,
    in_creation,
    is_live,
    is_terminating,
    new_envelope,
)
from kernlet.runner.services import ServicePort, parse_service_ports

__all__ = ["KernelActor"]

log = logging.getLogger(__name__)

KERNELSPEC_LABEL = "ai.kernlet.kernelspec"
SERVICE_PORTS_LABEL = "ai.kernlet.service-ports"


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

    # -- create ---------------------------------------------------------------------------

    def _create(self, msg: Create) -> None:
        self._create_done = msg.done
        self._create_started = time.monotonic()
        self._record(
            KernelPreparing(session_id=msg.session_id, image=msg.image, config=msg.config),
            then=self._check_image,
        )

    def _check_image(self) -> None:
        assert self.state is not None
        self._step(self.ctx.docker.image(self.state.image), then=self._image_ok,
                   fail=self._image_missing)

    def _image_missing(self, err: BaseException) -> None:
        """Pull the image when the name names a registry (auto-pull); else fail."""
        assert self.state is not None
        image = self.state.image
        if not (isinstance(err, ImageNotFound) and self.ctx.cfg.container.auto_pull
                and steps.names_registry(image)):
            self._create_failed(err)
            return
        timeout = self.ctx.cfg.container.pull_timeout
        self._record(KernelPulling(image=image), then=lambda: self._step(
            steps.pull_image(self.ctx.docker, image, timeout), then=self._image_ok))

    def _image_ok(self, info: Any) -> None:
        assert self.state is not None
        if KERNELSPEC_LABEL not in info.labels:
            self._create_failed(
                InvalidRequest(f"image {self.state.image} is not a kernlet kernel image "
                               f"(no {KERNELSPEC_LABEL} label)")
            )
            return
        try:
            self._service_ports = parse_service_ports(info.labels.get(SERVICE_PORTS_LABEL, ""))
        except ValueError as exc:
            self._create_failed(InvalidRequest(f"image {self.state.image}: {exc}"))
            return
        cfg = self.ctx.cfg.container
        request = {
            "cpu": str(self.state.config.get("cpu") or cfg.default_cpu),
            "mem": str(self.state.config.get("mem") or cfg.default_mem),
        }
        self.agent.tell(Allocate(self.kernel_id, request, len(self._service_ports),
                                 self.actor_ref))

    def _allocated(self, msg: Allocated) -> None:
        """The agent's answer: hold the allocation, or fail the create (nothing held)."""
        if is_terminating(self.state) or not is_live(self.state):
            return  # a destroy came first; its teardown releases what the agent gave
        if msg.error is not None:
            self._create_failed(msg.error)
            return
        self._allocation = msg.allocation
        self._ports = msg.ports
        assert self.state is not None
        bootstrap = str(self.state.config.get("bootstrap") or "")
        self._step(steps.prepare_dirs(self.ctx.cfg, self.kernel_id, bootstrap), self._dirs_ok)

    def _dirs_ok(self, dirs: steps.KernelDirs) -> None:
        alloc = self._allocation
        devices = {s: m for s, m in alloc.to_plain()["devices"].items()
                   if s not in ("cpu", "mem")}
        self._record(
            KernelCreating(slots=alloc.plain_slots(), cpuset=alloc.cpuset, ports=self._ports,
                           scratch_dir=str(dirs.scratch), devices=devices),
            then=self._create_container,
        )

    def _create_container(self) -> None:
        assert self.state is not None
        if is_terminating(self.state):
            self._teardown()
            return
        s = self.state
        spec = steps.container_spec(
            self.ctx.cfg, s, steps.kernel_dirs(self.ctx.cfg, self.kernel_id),
            self._port_map(),
        )

        async def create() -> str:
            async with self.ctx.create_slots:
                return await steps.create_container(self.ctx.docker, spec)

        self._cancellable = False
        self._inflight = self.spawn(create(), then=self._container_created,
                                    fail=self._guard_fail(None))

    def _container_created(self, container_id: str) -> None:
        self._inflight = None
        if is_terminating(self.state):
            self._stray_container = container_id
            self._teardown()
            return
        self._record(ContainerCreated(container_id=container_id), then=self._start)

    def _start(self) -> None:
        assert self.state is not None

        async def start() -> dict[str, Any]:
            async with self.ctx.create_slots:
                return await steps.start_and_connect(
                    self.ctx.docker, self.state.container_id if self.state else "", self.runs,
                    self.ctx.cfg.agent.create_timeout,
                )

        self._step(start(), then=self._started)

    def _port_map(self) -> dict[int, int]:
        """Container port -> host port, from the image's declared services (create) or the
        kernel's recorded service ports (restart)."""
        assert self.state is not None
        if self._service_ports:
            return {sp.port: hp for sp, hp in zip(self._service_ports, self.state.ports,
                                                  strict=True)}
        return {int(p["container_port"]): int(p["host_port"])
                for p in self.state.info.get("service_ports", [])}

    def _started(self, status: dict[str, Any]) -> None:
        assert self.state is not None
        info = {
            "id": self.kernel_id,
            "session_id": self.state.session_id,
            "agent_id": self.ctx.cfg.agent.id,
            "host": self.ctx.cfg.container.bind_host,
            "container_id": self.state.container_id,
            "image": self.state.image,
            "resource_spec": dict(self.state.slots),
            "service_ports": [
                {"name": sp.name, "protocol": sp.protocol, "container_port": sp.port,
                 "host_port": hp}
                for sp, hp in zip(self._service_ports, self.state.ports, strict=True)
            ] or list(self.state.info.get("service_ports", [])),
            "scratch_dir": self.state.scratch_dir,
            "runtime": {k: status.get(k) for k in ("runtime", "version")},
            "create_seconds": round(time.monotonic() - self._create_started, 3),
        }
        self._record(
            KernelStarted(container_id=self.state.container_id, info=info),
            then=lambda: self._answer_create({"ok": True, **info}),
        )

    def _answer_create(self, result: dict[str, Any]) -> None:
        done, self._create_done = self._create_done, None
        if done is not None:
            done({"id": self.kernel_id, **result})
        if self._restart_reply is not None:
            reply, self._restart_reply = self._restart_reply, None
            if result.get("ok"):
                reply.ok({"id": self.kernel_id, **result})
            else:
                reply.error(KernelNotRunning(f"restart failed: {result.get('error')}"))

    def _create_failed(self, err: BaseException) -> None:
        log.warning("kernel %s: creation failed: %s", self.kernel_id, err)
        if not isinstance(err, (ImageNotFound, InvalidRequest, InsufficientResource)):
            err = CreationFailed(f"kernel {self.kernel_id}: {err}")
        self._failure = err
        if is_live(self.state) and not is_terminating(self.state):
            self._record(KernelTerminating(reason="failed-to-create"), then=self._teardown)

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

    # -- restart ------------------------------------------------------------------------------

    def _restart(self, msg: Restart) -> None:
        if not can_execute(self.state):
            msg.reply.error(KernelNotRunning(f"kernel {self.kernel_id} is not running"))
            return
        self._restart_reply = msg.reply
        self._create_started = time.monotonic()
        old = self.state.container_id if self.state else ""

        async def remove_old() -> None:
            await self.runs.close("restarting")
            await self.ctx.docker.remove(old)

        def recreate(_: Any) -> None:
            assert self.state is not None
            self.runs = self._new_runbook()
            s = self.state
            self._record(
                KernelCreating(slots=s.slots, cpuset=s.cpuset, ports=s.ports,
                               scratch_dir=s.scratch_dir),
                then=self._create_container,
            )

        self._record(KernelRestarting(), then=lambda: self._step(remove_old(), recreate))

    # -- destroy and death ------------------------------------------------------------------

    def _destroy(self, msg: Destroy) -> None:
        if msg.reply is not None:
            self._waiters.append(msg.reply)
        if not is_live(self.state):
            self._finish()
            return
        if is_terminating(self.state):
            return  # already on its way; the reply waits with the others
        creating = in_creation(self.state)
        self._record(KernelTerminating(reason=msg.reason))
        if creating and self._inflight is not None:
            # a step is in flight: its outcome leads to the teardown (see _guard)
            if self._cancellable:
                self._inflight.cancel()
            return
        self._teardown()

    def _container_died(self, msg: ContainerDied) -> None:
        if self.state is None or self._tearing_down:
            return
        if msg.container_id not in (self.state.container_id, self._stray_container):
            return  # an old container (e.g. replaced by a restart)
        if msg.action == "oom":
            self._oom = True
        if msg.exit_code is not None:
            self._died_exit = msg.exit_code
        if is_terminating(self.state) or not is_live(self.state):
            return
        if msg.action in ("die", "destroy", "oom"):
            reason = "oom-killed" if self._oom else (
                "container-not-found" if msg.action == "destroy" else "self-terminated")
            if in_creation(self.state):
                self._failure = CreationFailed(
                    f"kernel {self.kernel_id}: the container {msg.action} during start "
                    f"(exit code {msg.exit_code}); see its logs"
                )
                reason = "failed-to-create"
            self._record(KernelTerminating(reason=reason))
            if self._inflight is None:
                self._teardown()
            elif self._cancellable:
                self._inflight.cancel()

    def _teardown(self) -> None:
        if self._tearing_down:
            return
        self._tearing_down = True
        assert self.state is not None
        container = self.state.container_id or self._stray_container
        grace = self.ctx.cfg.container.stop_grace

        async def run() -> int | None:
            await self.runs.close(self.state.reason if self.state else "terminated")
            return await steps.teardown(self.ctx.docker, self.ctx.cfg, self.kernel_id,
                                        container, grace)

        self.spawn(run(), then=self._torn_down, fail=self._teardown_failed)

    def _teardown_failed(self, err: BaseException) -> None:
        """Retry with backoff: a kernel is only recorded terminated once it is clean."""
        self._teardown_tries += 1
        delay = min(30.0, 0.5 * 2**self._teardown_tries)
        log.error("kernel %s: teardown failed (try %d, again in %.1f s): %s",
                  self.kernel_id, self._teardown_tries, delay, err)
        for reply in self._waiters:
            reply.error(err)
        self._waiters.clear()

        def again(_: Any) -> None:
            self._tearing_down = False
            self._teardown()

        self.spawn(asyncio.sleep(delay), then=again)

    def _torn_down(self, exit_code: int | None) -> None:
        assert self.state is not None
        self.agent.tell(Release(self.kernel_id))  # clean now: slots and ports go back
        if self._died_exit is not None and self.state.reason != "user-requested":
            exit_code = self._died_exit
        reason = self.state.reason
        if self._oom and reason not in ("failed-to-create",):
            reason = "oom-killed"
        self._record(KernelTerminated(reason=reason, exit_code=exit_code), then=self._finish)

    def _finish(self) -> None:
        state = self.state
        for reply in self._waiters:
            reply.ok({"id": self.kernel_id, "reason": state.reason if state else "",
                      "exit_code": state.exit_code if state else None})
        self._waiters.clear()
        if self._create_done is not None or self._restart_reply is not None:
            err = self._failure or KernelNotRunning(
                f"kernel {self.kernel_id} terminated during creation "
                f"({state.reason if state else 'unknown'})"
            )
            self._answer_create({"ok": False, "error": error_dict(err)})
        self.agent.tell(KernelGone(self.kernel_id))
        self.stop()

    # -- recovery and shutdown ----------------------------------------------------------------

    def _recover(self) -> None:
        """Rebuilt from the log after an agent restart: re-adopt, or record what happened."""
        assert self.state is not None
        s = self.state
        if is_terminating(s) or in_creation(s):
            # mid-creation kernels are rolled back; mid-destroy ones are finished
            if not is_terminating(s):
                self._record(KernelTerminating(reason="agent-restarted-during-creation"))
            self._teardown()
            return

        if s.current_run:
            # a run was going on when the agent stopped: its output is still buffered in the
            # runtime; collect it again and record its end
            self.runs.adopt(s.current_run, "query")
            self._active_runs.add(s.current_run)

        async def check() -> dict[str, Any]:
            info = await self.ctx.docker.inspect(s.container_id)
            if not info.running:
                return {"running": False, "exit_code": info.exit_code, "oom": info.oom_killed}
            status = await self.runs.connect(timeout=15.0)
            self.runs.settle_adopted(status.get("busy"))
            return {"running": True, "status": status}

        def checked(result: dict[str, Any]) -> None:
            if result["running"]:
                log.info("kernel %s re-adopted", self.kernel_id)
                return
            self._oom = bool(result.get("oom"))
            self._died_exit = result.get("exit_code")
            self._record(KernelTerminating(reason="oom-killed" if self._oom else "self-terminated"))
            self._teardown()

        def missing(err: BaseException) -> None:
            reason = "container-not-found" if "ContainerNotFound" in type(err).__name__ else (
                f"unrecoverable: {err}")
            log.warning("kernel %s: %s", self.kernel_id, err)
            self._record(KernelTerminating(reason=reason[:128]))
            self._teardown()

        self._step(check(), then=checked, fail=missing)

    def _shutdown(self) -> None:
        """Agent exit: keep the container; just close the runtime channel."""

        async def close() -> None:
            await self.runs.channel.close()

        self.spawn(close(), then=lambda _: self.stop(), fail=lambda _: self.stop())

    def on_failure(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        """Runs in this actor's thread after a handler raised; the actor then stops. Closes the
        runtime channel (waiting callers get an error at once); the agent actor rebuilds the
        kernel from its stream (see ``_SupervisedKernel``)."""
        log.error("kernel actor %s crashed: %r", self.kernel_id, exc_value)
        self.ctx.loop.submit(self.runs.close(f"kernel actor crashed: {exc_value}"))

    @property
    def state_name(self) -> str:
        return self.state.state.value if self.state else State.PREPARING.value


def failure_result(kernel_id: str, err: KernletError) -> dict[str, Any]:
    return {"id": kernel_id, "ok": False, "error": err.to_wire()}
