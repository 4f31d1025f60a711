"""The kernel lifecycle state machine, expressed once, as data.

::

                 kernel_preparing
      (none) ─────────────────────► PREPARING ──kernel_pulling──► PULLING
                                        │                            │
                                        │ kernel_creating            │ kernel_creating
                                        ▼                            │
                         ┌──────────► CREATING ◄─────────────────────┘
                         │              │  ▲ container_created (stays)
          kernel_creating│              │ kernel_started
                         │              ▼
                    RESTARTING ◄──── RUNNING ◄─┐ execution_*, kernel_actor_restarted
                         kernel_restarting │   │ (stay in RUNNING)
                                           └───┘
      any live state ──kernel_terminating──► TERMINATING
      any live state ──kernel_terminated───► TERMINATED (final: reason, exit code)
      RUNNING ──kernel_handed_over──► TERMINATED (a warm-pool kernel taken by a create:
                                      its holdings live on in the taker's stream)

The transition table maps (state, event type) to the next state. :func:`apply` is pure: it
folds one envelope into a :class:`KernelState` and raises :class:`IllegalTransition` for a pair
the table does not hold. Replay is ``functools.reduce(apply, events, None)``. No other module
compares lifecycle states; they ask the helpers here (:func:`is_live`, :func:`accepts`...).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from functools import reduce
from typing import Any

from kernlet.events.types import (
    ContainerCreated,
    Envelope,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionTimeout,
    KernelActorRestarted,
    KernelCreating,
    KernelHandedOver,
    KernelPreparing,
    KernelPulling,
    KernelRestarting,
    KernelStarted,
    KernelTerminated,
    KernelTerminating,
    SessionFailure,
    SessionSuccess,
)

__all__ = [
    "TRANSITIONS",
    "IllegalTransition",
    "KernelState",
    "State",
    "accepts",
    "apply",
    "can_execute",
    "in_creation",
    "is_live",
    "is_terminating",
    "replay",
]


class State(enum.StrEnum):
    """Lifecycle states of a kernel."""

    PREPARING = "preparing"
    PULLING = "pulling"
    CREATING = "creating"
    RUNNING = "running"
    RESTARTING = "restarting"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


_LIVE = (
    State.PREPARING,
    State.PULLING,
    State.CREATING,
    State.RUNNING,
    State.RESTARTING,
    State.TERMINATING,
)


def _build_table() -> dict[tuple[State | None, str], State]:
    table: dict[tuple[State | None, str], State] = {
        (None, KernelPreparing.TYPE): State.PREPARING,
        (State.PREPARING, KernelPulling.TYPE): State.PULLING,
        (State.PREPARING, KernelCreating.TYPE): State.CREATING,
        (State.PULLING, KernelCreating.TYPE): State.CREATING,
        (State.RESTARTING, KernelCreating.TYPE): State.CREATING,
        (State.CREATING, ContainerCreated.TYPE): State.CREATING,
        (State.CREATING, KernelStarted.TYPE): State.RUNNING,
        (State.RUNNING, KernelRestarting.TYPE): State.RESTARTING,
        (State.RUNNING, KernelHandedOver.TYPE): State.TERMINATED,
        (State.RUNNING, ExecutionStarted.TYPE): State.RUNNING,
        (State.RUNNING, ExecutionFinished.TYPE): State.RUNNING,
        (State.RUNNING, ExecutionTimeout.TYPE): State.RUNNING,
        (State.RUNNING, SessionSuccess.TYPE): State.RUNNING,
        (State.RUNNING, SessionFailure.TYPE): State.RUNNING,
        # a batch job ends as cancelled when its kernel is torn down under it
        (State.TERMINATING, SessionFailure.TYPE): State.TERMINATING,
        # a run may end while the kernel is already being torn down
        (State.TERMINATING, ExecutionFinished.TYPE): State.TERMINATING,
        (State.RESTARTING, ExecutionFinished.TYPE): State.RESTARTING,
    }
    for state in _LIVE:
        table[(state, KernelActorRestarted.TYPE)] = state
        table[(state, KernelTerminated.TYPE)] = State.TERMINATED
        if state is not State.TERMINATING:
            table[(state, KernelTerminating.TYPE)] = State.TERMINATING
    return table


#: (state before, event type) -> state after. ``None`` is "no such kernel yet".
TRANSITIONS: dict[tuple[State | None, str], State] = _build_table()


class IllegalTransition(Exception):
    """An event that the transition table does not allow from the kernel's current state."""

    def __init__(self, kernel_id: str, state: State | None, event_type: str) -> None:
        self.kernel_id = kernel_id
        self.state = state
        self.event_type = event_type
        where = state.value if state is not None else "(no kernel)"
        super().__init__(f"kernel {kernel_id}: {event_type} is not allowed in state {where}")


@dataclass(frozen=True, slots=True)
class KernelState:
    """Everything the log says about one kernel, folded from its stream."""

    kernel_id: str
    state: State
    seq: int
    session_id: str = ""
    image: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    slots: dict[str, str] = field(default_factory=dict)
    cpuset: tuple[int, ...] = ()
    ports: tuple[int, ...] = ()
    devices: dict[str, dict[str, str]] = field(default_factory=dict)
    scratch_dir: str = ""
    container_id: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    #: run id of the code running now ("" when idle), and what its execution_started said
    current_run: str = ""
    run_mode: str = ""
    run_timeout: float | None = None
    run_session: bool = False
    #: when the current run started (event time), for the rest of its time limit
    run_started_at: float = 0.0
    executions: int = 0
    actor_restarts: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    reason: str = ""
    exit_code: int | None = None


_STATE_FIELDS = tuple(f.name for f in fields(KernelState))


def accepts(state: KernelState | None, event_type: str) -> bool:
    """Whether the table allows ``event_type`` from this kernel's current state."""
    return (state.state if state is not None else None, event_type) in TRANSITIONS


def is_live(state: KernelState | None) -> bool:
    """A kernel that exists and has not terminated."""
    return state is not None and state.state is not State.TERMINATED


def can_execute(state: KernelState | None) -> bool:
    """A kernel whose runtime can take code now."""
    return state is not None and state.state is State.RUNNING


def apply(state: KernelState | None, env: Envelope) -> KernelState:
    """Fold one event into a kernel's state. Pure; raises IllegalTransition."""
    before = state.state if state is not None else None
    after = TRANSITIONS.get((before, env.type))
    if after is None:
        raise IllegalTransition(env.kernel_id, before, env.type)
    if state is None:
        state = KernelState(kernel_id=env.kernel_id, state=after, seq=0, created_at=env.time)
    expected = state.seq + 1
    if env.seq != expected:
        raise IllegalTransition(env.kernel_id, before, f"{env.type}#seq{env.seq}!={expected}")
    changes: dict[str, Any] = {"state": after, "seq": env.seq, "updated_at": env.time}
    body = env.body
    match body:
        case KernelPreparing():
            changes.update(session_id=body.session_id, image=body.image, config=body.config)
        case KernelCreating():
            changes.update(
                slots=body.slots,
                cpuset=body.cpuset,
                ports=body.ports,
                devices=body.devices,
                scratch_dir=body.scratch_dir,
                container_id="",
            )
        case ContainerCreated():
            changes.update(container_id=body.container_id)
        case KernelStarted():
            changes.update(container_id=body.container_id, info=body.info)
        case ExecutionStarted():
            changes.update(current_run=body.run_id, executions=state.executions + 1,
                           run_mode=body.mode, run_timeout=body.timeout,
                           run_session=body.session, run_started_at=env.time)
        case ExecutionFinished():
            if state.current_run == body.run_id:
                changes.update(_NO_RUN)
        case KernelActorRestarted():
            changes.update(actor_restarts=state.actor_restarts + 1)
        case KernelTerminating():
            changes.update(reason=body.reason)
        case KernelTerminated():
            changes.update(reason=body.reason, exit_code=body.exit_code, **_NO_RUN)
        case KernelHandedOver():
            changes.update(reason="pool-taken", **_NO_RUN)
        case _:
            pass
    return _replace(state, changes)


_NO_RUN: dict[str, Any] = {"current_run": "", "run_mode": "", "run_timeout": None,
                           "run_session": False, "run_started_at": 0.0}


def _replace(state: KernelState, changes: dict[str, Any]) -> KernelState:
    """``dataclasses.replace`` without its per-call introspection and ``__init__`` (replay
    calls this once per event; it was 40 % of a fold). Every field is set, so the result is
    what ``replace`` would make."""
    new = object.__new__(KernelState)
    for name in _STATE_FIELDS:
        object.__setattr__(new, name, changes[name] if name in changes else getattr(state, name))
    return new


def in_creation(state: KernelState | None) -> bool:
    """A kernel on its way to running (preparing, pulling, creating or restarting)."""
    return state is not None and state.state in (
        State.PREPARING,
        State.PULLING,
        State.CREATING,
        State.RESTARTING,
    )


def is_terminating(state: KernelState | None) -> bool:
    return state is not None and state.state is State.TERMINATING


def replay(events: Iterable[Envelope]) -> KernelState | None:
    """Fold a kernel's whole stream, in order, into its state."""
    return reduce(apply, events, None)
