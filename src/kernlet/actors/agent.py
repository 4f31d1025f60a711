"""The agent actor: root supervisor and router of manager commands to kernel actors.

It keeps the registry (kernel id → kernel actor, and each kernel's latest state as reported by
its actor), starts one kernel actor per created or recovered kernel, restarts a kernel actor
that crashed from that kernel's event stream, routes container events and relists to kernel
actors and removes orphan containers. The commands themselves are handled by the table in
:mod:`kernlet.actors.commands`; the node's slots and ports are kept in the
:class:`~kernlet.actors.ledger.Ledger`, which only this actor touches.
"""

from __future__ import annotations

import concurrent.futures
import logging
import traceback
from typing import Any

import pykka

from kernlet import logs
from kernlet.actors.base import LoopActor
from kernlet.actors.commands import COMMANDS, summary
from kernlet.actors.context import AgentContext
from kernlet.actors.image_jobs import ImageJobs
from kernlet.actors.kernel import KernelActor
from kernlet.actors.ledger import Ledger
from kernlet.actors.messages import (
    Allocate,
    Allocated,
    Command,
    ContainerDied,
    Describe,
    JoinNetwork,
    KernelGone,
    KernelUpdated,
    LeaveNetwork,
    RecordAgentEvent,
    Recover,
    Release,
    Relist,
    Shutdown,
)
from kernlet.actors.networks import Networks
from kernlet.actors.pool import Pool, PoolCreated
from kernlet.actors.pool_take import Taken
from kernlet.actors.pulls import start_pull
from kernlet.actors.reconcile import Died, Missing, Orphan, plan, plan_networks
from kernlet.drivers.docker import LABEL_KERNEL, ContainerEvent
from kernlet.drivers.ports import PortPool
from kernlet.drivers.resources import Allocator
from kernlet.errors import InternalError, KernelNotFound, KernelNotRunning, KernletError
from kernlet.events import (
    AgentError,
    EventBody,
    KernelActorRestarted,
    KernelState,
    OrphanRemoved,
    is_live,
    replay,
)

__all__ = ["AgentActor", "KernelCrashed", "summary"]

log = logging.getLogger(__name__)


class KernelCrashed:
    """A kernel actor died from an exception (sent by the watchdog in on_failure)."""

    def __init__(self, kernel_id: str, error: str) -> None:
        self.kernel_id = kernel_id
        self.error = error


class AgentActor(LoopActor):
    def __init__(
        self,
        ctx: AgentContext,
        known_ids: set[str],
        resources: Allocator | None = None,
        ports: PortPool | None = None,
        hwinfo: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(ctx.loop)
        self.ctx = ctx
        #: the node's slots and ports and what each kernel holds; only this actor touches it
        self.ledger = Ledger(resources or Allocator([]),
                             ports or PortPool(*ctx.cfg.container.port_range))
        #: what the resource plugins detected (gather_hwinfo)
        self.hwinfo = hwinfo or {}
        #: the registry (shared with the command server, which only reads it)
        self.kernels: dict[str, pykka.ActorRef[Any]] = ctx.kernel_refs
        self.states: dict[str, KernelState] = {}
        #: every kernel id the log has ever seen (a create may not reuse one)
        self.known_ids = set(known_ids)
        #: orphan containers being removed now
        self._removing: set[str] = set()
        #: images being pulled by check_and_pull
        self.pulling: set[str] = set()
        #: commits and pushes in flight (kernlet.actors.image_jobs)
        self.image_jobs = ImageJobs()
        #: session networks and their holders (docs/sessions.md); only this actor touches it
        self.networks = Networks(self)
        #: the warm pool (docs/pool.md); only this actor touches it
        self.pool = Pool(self)

    # -- the registry ---------------------------------------------------------------------------

    def start_kernel(self, kernel_id: str, state: KernelState | None) -> pykka.ActorRef[Any]:
        ref = _SupervisedKernel.start(self.ctx, self.actor_ref, kernel_id, state)
        self.kernels[kernel_id] = ref
        self.known_ids.add(kernel_id)
        if state is not None:
            self.states[kernel_id] = state
        return ref

    def kernel(self, kernel_id: str) -> pykka.ActorRef[Any]:
        """The live kernel's actor, or KernelNotRunning / KernelNotFound."""
        ref = self.kernels.get(kernel_id)
        if (ref is None or not ref.is_alive()) and kernel_id in self.known_ids:
            raise KernelNotRunning(f"kernel {kernel_id!r} has terminated")
        if ref is None or not ref.is_alive():
            raise KernelNotFound(f"no live kernel {kernel_id!r} on agent {self.ctx.cfg.agent.id}")
        return ref

    def live_state(self, kernel_id: str) -> KernelState:
        """The live kernel's state, once it has a container (else KernelNotRunning)."""
        self.kernel(kernel_id)
        state = self.states.get(kernel_id)
        if state is None or not state.container_id:
            raise KernelNotRunning(f"kernel {kernel_id!r} has no container yet")
        return state

    def tell_kernel(self, kernel_id: str, message: Any) -> bool:
        """Tell a registered kernel's actor; False if it has just stopped."""
        return _tell(self.kernels[kernel_id], message)

    def inject_root_fault(self) -> None:
        """Debug only (debug_fault actor=agent): this actor dies on its next message."""
        self.actor_ref.tell(_RootFault())

    def adopt(self, states: dict[str, KernelState], networks: tuple[str, ...] = ()) -> None:
        """Start actors for the live kernels of the log and let each check its container.
        Slots, ports and session networks' holders are restored exactly as the log recorded
        them, before any new create (``networks``: the manager's, from the agent stream)."""
        self.networks.restore(states.values(), networks)
        for kernel_id, state in states.items():
            self._restore(state)
            self.start_kernel(kernel_id, state).tell(Recover())
        self.pool.refill()

    # -- resources ------------------------------------------------------------------------------

    def _restore(self, state: KernelState) -> None:
        if not state.slots and not state.ports:
            return  # it never got as far as kernel_creating
        try:
            self.ledger.restore(state.kernel_id, state.slots, state.cpuset, state.devices,
                                state.ports)
        except KernletError as exc:
            # cannot happen with a sound log; say so loudly rather than double-allocate
            log.error("kernel %s: cannot restore its resources: %s", state.kernel_id, exc,
                      extra={"kernel_id": state.kernel_id})
            self.record_agent_event(AgentError(
                message=f"kernel {state.kernel_id}: resources not restored: {exc}"))

    def _allocate(self, msg: Allocate) -> None:
        try:
            allocation, ports = self.ledger.allocate(msg.kernel_id, msg.request, msg.ports)
        except KernletError as exc:
            _tell(msg.reply_to, Allocated(None, (), exc))
            return
        if not _tell(msg.reply_to, Allocated(allocation, ports)):
            self.ledger.release(msg.kernel_id)  # its actor stopped meanwhile: hold nothing

    def resume_pulls(self, images: list[str]) -> None:
        """Pull again what an agent crash cut short (found in the log by
        ``interrupted_pulls``): each such pull still ends with ``image_pulled``."""
        for image in images:
            if image not in self.pulling:
                start_pull(self, image, self.ctx.cfg.container.pull_timeout,
                           "resumed after an agent restart")

    def kernels_alive(self) -> int:
        return sum(1 for ref in self.kernels.values() if ref.is_alive())

    def record_agent_event(self, body: EventBody) -> concurrent.futures.Future[Any]:
        """Record on the agent's own stream (durable when the future is done)."""
        return self.ctx.loop.submit(self.ctx.record_agent(body))

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
                self.pool.gone(self.states.pop(message.kernel_id, None))
            case Taken():
                self.pool.taken(message)
            case PoolCreated():
                self.pool.created(message)
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
            case JoinNetwork() | LeaveNetwork():
                self.networks.handle(message)
            case Describe():
                message.reply.ok({
                    "resource_slots": {s: list(v) for s, v in
                                       self.ledger.advertised_slots().items()},
                    "slots_used": self.ledger.slot_report(),
                    "hwinfo": self.hwinfo,
                    "kernels": [summary(s) for s in self.states.values() if is_live(s)],
                })
            case Release():
                self.ledger.release(message.kernel_id)
            case _RootFault():
                raise _InjectedRootDeath("injected fault in the agent actor")
            case _:
                log.warning("agent: unknown message %r", message)
        return None

    def _command(self, cmd: Command) -> None:
        handler = COMMANDS.get(type(cmd.request))
        if handler is None:
            cmd.reply.error(InternalError(f"no handler for {type(cmd.request).__name__}"))
            return
        handler(self, cmd.request, cmd)

    def _container_event(self, ev: ContainerEvent) -> None:
        kernel_id = ev.labels.get(LABEL_KERNEL, "")
        state = self.states.get(kernel_id)
        if state is None or state.container_id != ev.container_id:
            # a kernel taken from the warm pool runs in the pool kernel's labelled container
            kernel_id = next((k for k, s in self.states.items()
                              if s.container_id == ev.container_id and is_live(s)), kernel_id)
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
        for orphan in plan_networks(self.networks.book.known(), msg.networks, msg.now,
                                    self.ctx.cfg.agent.orphan_grace):
            self.networks.remove_orphan(orphan)
        self.pool.refill()  # the safety net of the warm pool's refill

    def _remove_orphan(self, orphan: Orphan) -> None:
        if orphan.container_id in self._removing:
            return
        self._removing.add(orphan.container_id)
        log.warning("removing orphan container %s (kernel %s)", orphan.container_id[:12],
                    orphan.kernel_id or "?", extra={"kernel_id": orphan.kernel_id or None})

        def removed(_: Any) -> None:
            self._removing.discard(orphan.container_id)
            self.record_agent_event(OrphanRemoved(container_id=orphan.container_id,
                                                  kernel_id=orphan.kernel_id,
                                                  exit_code=orphan.exit_code))

        def failed(err: BaseException) -> None:
            self._removing.discard(orphan.container_id)
            log.warning("could not remove orphan %s: %s", orphan.container_id[:12], err)

        with logs.bound(kernel_id=orphan.kernel_id or None):  # the step's records name it
            self.spawn(self.ctx.docker.remove(orphan.container_id), then=removed, fail=failed)

    # -- supervision ----------------------------------------------------------------------------

    def _restart_crashed(self, msg: KernelCrashed) -> None:
        """Rebuild a crashed kernel actor from its stream; the incident becomes an event."""
        self.kernels.pop(msg.kernel_id, None)

        def rebuilt(events: list[Any]) -> None:
            state = replay(events)
            if state is None or not is_live(state):
                self.states.pop(msg.kernel_id, None)
                return
            ref = self.start_kernel(msg.kernel_id, state)
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
