"""The agent actor: root supervisor and router of manager commands to kernel actors.

It keeps the registry (kernel id → kernel actor, and each kernel's latest state as reported by
its actor), answers the commands that need no kernel, starts one kernel actor per created or
recovered kernel, and restarts a kernel actor that crashed from that kernel's event stream.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
import traceback
import uuid
from typing import Any

import pykka

from kernlet import __version__
from kernlet.actors.base import LoopActor
from kernlet.actors.context import AgentContext
from kernlet.actors.kernel import KernelActor
from kernlet.actors.messages import (
    Allocate,
    Allocated,
    Command,
    Complete,
    ContainerDied,
    Create,
    Describe,
    Destroy,
    InjectedFault,
    Interrupt,
    KernelGone,
    KernelUpdated,
    RecordAgentEvent,
    Recover,
    Release,
    Relist,
    Restart,
    RunCode,
    Shutdown,
    TriggerBatch,
)
from kernlet.actors.reconcile import Died, Missing, Orphan, plan
from kernlet.actors.reply import Gather, Reply
from kernlet.actors.services import shutdown_service, start_service
from kernlet.actors.steps import kernel_dirs, pull_image
from kernlet.drivers.docker import LABEL_KERNEL, ContainerEvent, ImageInfo, PullProgress
from kernlet.drivers.files import WorkDir
from kernlet.drivers.ports import PortPool
from kernlet.drivers.resources import Allocation, Allocator, format_amount
from kernlet.errors import (
    ImageNotFound,
    InternalError,
    InvalidRequest,
    KernelAlreadyExists,
    KernelNotFound,
    KernelNotRunning,
    KernletError,
)
from kernlet.events import (
    AGENT_STREAM,
    AgentError,
    EventBody,
    ImagePulled,
    ImagePullProgress,
    KernelActorRestarted,
    KernelState,
    OrphanRemoved,
    event_to_dict,
    is_live,
    new_envelope,
    replay,
)
from kernlet.protocol import (
    CheckAndPull,
    CreateKernels,
    DebugFault,
    DestroyKernel,
    DownloadFile,
    Execute,
    GatherHwinfo,
    GetCompletions,
    GetEvents,
    GetLogs,
    InterruptKernel,
    ListFiles,
    ListKernels,
    Ping,
    ResetAgent,
    RestartKernel,
    ShutdownService,
    StartService,
    SyncKernelRegistry,
    TriggerBatchExecution,
    UploadFile,
)

__all__ = ["AgentActor", "KernelCrashed", "summary"]

log = logging.getLogger(__name__)


class KernelCrashed:
    """A kernel actor died from an exception (sent by the watchdog in on_failure)."""

    def __init__(self, kernel_id: str, error: str) -> None:
        self.kernel_id = kernel_id
        self.error = error


def summary(state: KernelState) -> dict[str, Any]:
    """The public view of one kernel."""
    return {
        "id": state.kernel_id,
        "session_id": state.session_id,
        "state": state.state.value,
        "image": state.image,
        "container_id": state.container_id,
        "slots": dict(state.slots),
        "executions": state.executions,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "reason": state.reason,
        "exit_code": state.exit_code,
    }


class AgentActor(LoopActor):
    def __init__(
        self,
        ctx: AgentContext,
        known_ids: set[str],
        agent_seq: int = 0,
        resources: Allocator | None = None,
        ports: PortPool | None = None,
        hwinfo: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(ctx.loop)
        self.ctx = ctx
        #: the node's slots and the kernels' holdings; only this actor touches them
        self.resources = resources or Allocator([])
        self.ports = ports or PortPool(*ctx.cfg.container.port_range)
        #: what the resource plugins detected (gather_hwinfo)
        self.hwinfo = hwinfo or {}
        self.kernels: dict[str, pykka.ActorRef[Any]] = {}
        self.states: dict[str, KernelState] = {}
        #: every kernel id the log has ever seen (a create may not reuse one)
        self.known_ids = set(known_ids)
        self._agent_seq = agent_seq
        #: orphan containers being removed now
        self._removing: set[str] = set()
        #: images being pulled by check_and_pull
        self._pulling: set[str] = set()

    # -- kernels ------------------------------------------------------------------------------

    def _start_kernel(self, kernel_id: str, state: KernelState | None) -> pykka.ActorRef[Any]:
        ref = _SupervisedKernel.start(self.ctx, self.actor_ref, kernel_id, state)
        self.kernels[kernel_id] = ref
        self.known_ids.add(kernel_id)
        if state is not None:
            self.states[kernel_id] = state
        return ref

    def adopt(self, states: dict[str, KernelState]) -> None:
        """Start actors for the live kernels of the log and let each check its container.
        Slots and ports are restored exactly as the log recorded them, before any new create."""
        for kernel_id, state in states.items():
            self._restore(state)
            self._start_kernel(kernel_id, state).tell(Recover())

    def _restore(self, state: KernelState) -> None:
        if not state.slots and not state.ports:
            return  # it never got as far as kernel_creating
        try:
            self.resources.restore(state.kernel_id, Allocation.from_event(
                state.slots, state.cpuset, state.devices))
            self.ports.restore(state.ports)
        except KernletError as exc:
            # cannot happen with a sound log; say so loudly rather than double-allocate
            log.error("kernel %s: cannot restore its resources: %s", state.kernel_id, exc)
            self.record_agent_event(AgentError(
                message=f"kernel {state.kernel_id}: resources not restored: {exc}"))

    def slot_report(self) -> dict[str, dict[str, str]]:
        """slot -> capacity / used / free as strings (after reserved amounts)."""
        cap, used, free = self.resources.capacity(), self.resources.used(), self.resources.free()
        kinds = self.resources.advertised_slots()
        return {s: {"type": kinds[s][0], "capacity": format_amount(cap[s]),
                    "used": format_amount(used[s]), "free": format_amount(free[s])}
                for s in cap}

    def _allocate(self, msg: Allocate) -> None:
        try:
            allocation = self.resources.allocate(msg.kernel_id, msg.request)
        except KernletError as exc:
            _tell(msg.reply_to, Allocated(None, (), exc))
            return
        try:
            ports = self.ports.acquire(msg.ports) if msg.ports else ()
        except KernletError as exc:
            self.resources.release(msg.kernel_id)
            _tell(msg.reply_to, Allocated(None, (), exc))
            return
        if not _tell(msg.reply_to, Allocated(allocation, ports)):
            self._release(msg.kernel_id)  # its actor stopped meanwhile: hold nothing for it

    def _release(self, kernel_id: str) -> None:
        self.resources.release(kernel_id)
        state = self.states.get(kernel_id)
        if state is not None and state.ports:
            self.ports.release(state.ports)

    def next_agent_seq(self) -> int:
        """Reserve the next seq of the agent's own stream."""
        self._agent_seq += 1
        return self._agent_seq

    def kernels_alive(self) -> int:
        return sum(1 for ref in self.kernels.values() if ref.is_alive())

    def record_agent_event(self, body: EventBody) -> concurrent.futures.Future[Any]:
        env = new_envelope(AGENT_STREAM, self.next_agent_seq(), body)
        return self.ctx.loop.submit(self.ctx.persist(env))

    # -- the root never dies of one message ----------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Every message, and every step's outcome, is handled here; an error in one is
        logged, recorded as ``agent_error`` and survived. Only a fault that is not an
        Exception (or an injected one) reaches :meth:`on_failure`."""
        try:
            return super().on_receive(message)
        except _InjectedRootDeath:
            raise
        except Exception as exc:
            log.exception("agent actor: %s failed", type(message).__name__)
            self.record_agent_event(AgentError(
                message=f"{type(message).__name__}: {type(exc).__name__}: {exc}"[:1000],
                traceback=traceback.format_exc()))
            return None

    def on_failure(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        """The root actor is dying: record it (durably) for the service, which then exits
        non-zero so that systemd restarts the agent and recovery runs."""
        log.critical("agent actor died: %s: %s", exc_type.__name__, exc_value)
        why = "".join(traceback.format_exception(exc_type, exc_value, tb))
        try:
            self.record_agent_event(AgentError(
                message=f"agent actor died: {exc_type.__name__}: {exc_value}"[:1000],
                traceback=why)).result(timeout=10)
        except Exception as exc:  # noqa: BLE001 - dying anyway; the log line above stays
            log.error("could not record the agent actor's death: %s", exc)

    # -- messages -------------------------------------------------------------------------------

    def handle(self, message: Any) -> Any:
        match message:
            case Command():
                try:
                    self._command(message)
                except KernletError as exc:
                    message.reply.error(exc)
                except pykka.ActorDeadError:
                    message.reply.error(KernelNotRunning("the kernel's actor stopped meanwhile"))
                except Exception as exc:
                    log.exception("command failed")
                    self.record_agent_event(
                        AgentError(message=f"{type(exc).__name__}: {exc}",
                                   traceback=traceback.format_exc())
                    )
                    message.reply.error(InternalError(f"{type(exc).__name__}: {exc}"))
            case KernelUpdated():
                self.states[message.state.kernel_id] = message.state
            case KernelGone():
                self.kernels.pop(message.kernel_id, None)
                self.states.pop(message.kernel_id, None)
            case ContainerEvent():
                self._container_event(message)
            case Relist():
                self._relist(message)
            case KernelCrashed():
                self._restart_crashed(message)
            case RecordAgentEvent():
                self.record_agent_event(message.body)
            case Allocate():
                self._allocate(message)
            case Describe():
                message.reply.ok({
                    "resource_slots": {s: list(v) for s, v in
                                       self.resources.advertised_slots().items()},
                    "slots_used": self.slot_report(),
                    "hwinfo": self.hwinfo,
                    "kernels": [summary(s) for s in self.states.values() if is_live(s)],
                })
            case Release():
                self._release(message.kernel_id)
            case _RootFault():
                raise _InjectedRootDeath("injected fault in the agent actor")
            case _:
                log.warning("agent: unknown message %r", message)
        return None

    def _container_event(self, ev: ContainerEvent) -> None:
        kernel_id = ev.labels.get(LABEL_KERNEL, "")
        ref = self.kernels.get(kernel_id)
        if ref is not None and ev.action in ("die", "oom", "destroy"):
            _tell(ref, ContainerDied(ev.container_id, ev.action, ev.exit_code))

    def _relist(self, msg: Relist) -> None:
        """Turn differences between the registry and Docker into events (see reconcile)."""
        for action in plan(self.states, msg.containers, msg.now, self.ctx.cfg.agent.orphan_grace):
            match action:
                case Died():
                    ref = self.kernels.get(action.kernel_id)
                    if ref is not None:
                        _tell(ref, ContainerDied(action.container_id,
                                                 "oom" if action.oom_killed else "die",
                                                 action.exit_code))
                case Missing():
                    ref = self.kernels.get(action.kernel_id)
                    if ref is not None:
                        _tell(ref, ContainerDied(action.container_id, "destroy", None))
                case Orphan():
                    self._remove_orphan(action)

    def _remove_orphan(self, orphan: Orphan) -> None:
        if orphan.container_id in self._removing:
            return
        self._removing.add(orphan.container_id)
        log.warning("removing orphan container %s (kernel %s)", orphan.container_id[:12],
                    orphan.kernel_id or "?")

        def removed(_: Any) -> None:
            self._removing.discard(orphan.container_id)
            self.record_agent_event(OrphanRemoved(container_id=orphan.container_id,
                                                  kernel_id=orphan.kernel_id,
                                                  exit_code=orphan.exit_code))

        def failed(err: BaseException) -> None:
            self._removing.discard(orphan.container_id)
            log.warning("could not remove orphan %s: %s", orphan.container_id[:12], err)

        self.spawn(self.ctx.docker.remove(orphan.container_id), then=removed, fail=failed)

    def _kernel(self, kernel_id: str) -> pykka.ActorRef[Any]:
        ref = self.kernels.get(kernel_id)
        if (ref is None or not ref.is_alive()) and kernel_id in self.known_ids:
            raise KernelNotRunning(f"kernel {kernel_id!r} has terminated")
        if ref is None or not ref.is_alive():
            raise KernelNotFound(f"no live kernel {kernel_id!r} on agent {self.ctx.cfg.agent.id}")
        return ref

    def _command(self, cmd: Command) -> None:
        req, reply = cmd.request, cmd.reply
        match req:
            case Ping():
                reply.ok({"msg": req.msg, "agent_id": self.ctx.cfg.agent.id,
                          "version": __version__})
            case CreateKernels():
                self._create_kernels(req, cmd)
            case DestroyKernel():
                self._kernel(req.kernel_id).tell(Destroy(reason=req.reason, reply=reply))
            case RestartKernel():
                self._kernel(req.kernel_id).tell(Restart(reply=reply))
            case Execute():
                self._kernel(req.kernel_id).tell(RunCode(req, reply, cmd.sink))
            case InterruptKernel():
                self._kernel(req.kernel_id).tell(Interrupt(reply))
            case GetCompletions():
                self._kernel(req.kernel_id).tell(Complete(req.text, req.pos, reply))
            case ListKernels():
                self._list_kernels(req, cmd)
            case GetEvents():
                self._get_events(req, cmd)
            case ResetAgent():
                self._reset(req.reason, cmd)
            case GetLogs():
                state = self._live_state(req.kernel_id)
                self.spawn(self.ctx.docker.logs(state.container_id, req.tail),
                           then=lambda text: reply.ok({"logs": text}), fail=reply.error)
            case UploadFile():
                wd = self._files(req.kernel_id, reply)
                self.spawn(wd.upload(req.path, req.data, req.append), then=reply.ok,
                           fail=reply.error)
            case DownloadFile():
                wd = self._files(req.kernel_id, reply)
                self.spawn(wd.download(req.path, req.offset, req.length), then=reply.ok,
                           fail=reply.error)
            case ListFiles():
                wd = self._files(req.kernel_id, reply)
                self.spawn(wd.list(req.path), then=reply.ok, fail=reply.error)
            case SyncKernelRegistry():
                self._sync_registry(req, cmd)
            case StartService():
                state = self._live_state(req.kernel_id)
                self.spawn(start_service(self.ctx.docker, self.ctx.cfg, state, req.service),
                           then=reply.ok, fail=reply.error)
            case ShutdownService():
                state = self._live_state(req.kernel_id)
                self.spawn(shutdown_service(self.ctx.docker, self.ctx.cfg, state, req.service),
                           then=reply.ok, fail=reply.error)
            case GatherHwinfo():
                reply.ok({"plugins": self.hwinfo, "slots": self.slot_report()})
            case CheckAndPull():
                self._check_and_pull(req.image, req.timeout, reply)
            case TriggerBatchExecution():
                run_id = uuid.uuid4().hex
                self._kernel(req.kernel_id).tell(
                    TriggerBatch(run_id=run_id, code=req.code, timeout=req.timeout, reply=reply))
            case DebugFault():
                if not self.ctx.cfg.debug.fault_injection:
                    raise InvalidRequest("debug_fault: fault injection is disabled "
                                         "(debug.fault-injection = false)")
                if req.actor == "agent":
                    reply.ok({"injected": True, "actor": "agent"})
                    self.actor_ref.tell(_RootFault())
                else:
                    self._kernel(req.kernel_id).tell(InjectedFault())
                    reply.ok({"injected": True, "actor": "kernel"})
            case _:
                reply.error(InternalError(f"no handler for {type(req).__name__}"))

    def _create_kernels(self, req: CreateKernels, cmd: Command) -> None:
        taken = [k for k in req.kernel_ids if k in self.known_ids or k in self.kernels]
        if taken:
            raise KernelAlreadyExists(f"kernel id(s) already used on this agent: {taken}")
        gather = Gather(len(req.kernel_ids), lambda results: cmd.reply.ok({"kernels": results}))
        for i, (kernel_id, kconfig) in enumerate(zip(req.kernel_ids, req.configs, strict=True)):
            ref = self._start_kernel(kernel_id, None)
            ref.tell(Create(session_id=req.session_id, image=kconfig.image,
                            config=kconfig.model_dump(), done=gather.part(i)))

    def _live_state(self, kernel_id: str) -> KernelState:
        self._kernel(kernel_id)
        state = self.states.get(kernel_id)
        if state is None or not state.container_id:
            raise KernelNotRunning(f"kernel {kernel_id!r} has no container yet")
        return state

    def _files(self, kernel_id: str, reply: Reply) -> WorkDir:
        self._kernel(kernel_id)
        c = self.ctx.cfg.container
        return WorkDir(kernel_dirs(self.ctx.cfg, kernel_id).work, c.kernel_uid, c.kernel_gid)

    def _sync_registry(self, req: SyncKernelRegistry, cmd: Command) -> None:
        """The manager's belief vs ours: destroy what it does not know, report what we lack."""
        ours = {k for k, s in self.states.items() if is_live(s)}
        theirs = set(req.kernel_ids)
        for kernel_id in sorted(ours - theirs):
            _tell(self.kernels[kernel_id], Destroy(reason="not-found-in-manager"))
        terminated = [
            {"id": k, "reason": "already-terminated" if k in self.known_ids else "unknown-kernel"}
            for k in sorted(theirs - ours)
        ]
        cmd.reply.ok({"destroyed": sorted(ours - theirs), "terminated": terminated})

    def _check_and_pull(self, image: str, timeout: float, reply: Reply) -> None:
        """Answer at once (present / pulling); a pull reports image_pull_progress events
        (at most one a second) and ends with image_pulled."""
        if image in self._pulling:
            reply.ok({"image": image, "status": "pulling"})
            return
        ref = self.actor_ref
        last = [0.0]

        def progress(p: PullProgress) -> None:  # loop thread
            now = time.monotonic()
            if now - last[0] >= 1.0:
                last[0] = now
                ref.tell(RecordAgentEvent(ImagePullProgress(image=image, status=p.status,
                                                            current=p.current, total=p.total)))

        def pulled(info: ImageInfo) -> None:
            self._pulling.discard(image)
            self.record_agent_event(ImagePulled(image=image, ok=True, image_id=info.id))

        def failed(err: BaseException) -> None:
            self._pulling.discard(image)
            self.record_agent_event(ImagePulled(image=image, ok=False, error=str(err)[:1000]))

        def missing(err: BaseException) -> None:
            if not isinstance(err, ImageNotFound):
                reply.error(err)
                return
            self._pulling.add(image)
            reply.ok({"image": image, "status": "pulling"})
            self.spawn(pull_image(self.ctx.docker, image, timeout, progress), then=pulled,
                       fail=failed)

        self.spawn(self.ctx.docker.image(image),
                   then=lambda info: reply.ok({"image": image, "status": "present",
                                               "id": info.id}),
                   fail=missing)

    def _reset(self, reason: str, cmd: Command) -> None:
        """Destroy every live kernel; answer when all are clean."""
        ids = [k for k, ref in self.kernels.items() if ref.is_alive()]
        if not ids:
            cmd.reply.ok({"destroyed": []})
            return
        gather = Gather(len(ids), lambda results: cmd.reply.ok({"destroyed": [
            r.get("id") if isinstance(r, dict) else {"error": str(r)} for r in results]}))
        for i, kernel_id in enumerate(ids):
            part = Reply.to(gather.part(i))
            if not _tell(self.kernels[kernel_id], Destroy(reason=reason, reply=part)):
                part.ok({"id": kernel_id})  # it stopped meanwhile: nothing left to destroy

    def _list_kernels(self, req: ListKernels, cmd: Command) -> None:
        live = [summary(s) for s in self.states.values() if is_live(s)]
        if not req.all:
            cmd.reply.ok({"kernels": live})
            return

        async def everything() -> list[dict[str, Any]]:
            out = []
            for kernel_id in await self.ctx.store.kernel_ids():
                if kernel_id == AGENT_STREAM:
                    continue
                state = replay(await self.ctx.store.read_stream(kernel_id))
                if state is not None:
                    out.append(summary(state))
            return out

        self.spawn(everything(), then=lambda ks: cmd.reply.ok({"kernels": ks}),
                   fail=cmd.reply.error)

    def _get_events(self, req: GetEvents, cmd: Command) -> None:
        def done(events: list[Any]) -> None:
            if not events:
                cmd.reply.error(KernelNotFound(f"no events for kernel {req.kernel_id!r}"))
            else:
                cmd.reply.ok({"events": [event_to_dict(e) for e in events]})

        self.spawn(self.ctx.store.read_stream(req.kernel_id), then=done, fail=cmd.reply.error)

    # -- supervision ----------------------------------------------------------------------------

    def _restart_crashed(self, msg: KernelCrashed) -> None:
        """Rebuild a crashed kernel actor from its stream; the incident becomes an event."""
        self.kernels.pop(msg.kernel_id, None)

        def rebuilt(events: list[Any]) -> None:
            state = replay(events)
            if state is None or not is_live(state):
                self.states.pop(msg.kernel_id, None)
                return
            ref = self._start_kernel(msg.kernel_id, state)
            ref.tell(_RecordIncident(msg.error))
            ref.tell(Recover())

        self.spawn(self.ctx.store.read_stream(msg.kernel_id), then=rebuilt)

    def shutdown_kernels(self) -> None:
        """Agent exit: every kernel actor lets go of its kernel; containers keep running."""
        for ref in list(self.kernels.values()):
            if ref.is_alive():
                ref.tell(Shutdown())

    def live_count(self) -> int:
        return sum(1 for s in self.states.values() if is_live(s))


def _tell(ref: pykka.ActorRef[Any], message: Any) -> bool:
    """Tell an actor that may have just stopped; False (and nothing else) if it has."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        log.debug("%s for a stopped actor dropped", type(message).__name__)
        return False
    return True


class _RootFault:
    """Debug only: the agent actor dies on receipt (tests of the process's exit)."""


class _InjectedRootDeath(RuntimeError):
    """Passes the root's catch-all on purpose, so that the actor really dies."""


class _RecordIncident:
    def __init__(self, error: str) -> None:
        self.error = error


class _SupervisedKernel(KernelActor):
    """A kernel actor that reports its own crash to the agent actor."""

    def handle(self, message: Any) -> Any:
        if isinstance(message, _RecordIncident):
            self.record(KernelActorRestarted(error=message.error[:1000]))
            return None
        return super().handle(message)

    def on_failure(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        super().on_failure(exc_type, exc_value, tb)
        try:
            self.agent.tell(KernelCrashed(self.kernel_id, f"{exc_type.__name__}: {exc_value}"))
        except pykka.ActorDeadError:
            pass
