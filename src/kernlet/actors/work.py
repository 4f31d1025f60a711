"""Where a kernel is in its life: the working phase, explicit data beside the durable state.

:class:`Work` is everything a kernel actor knows that the log does not say (the step in
flight, the facts its hooks made, what Docker said of the container's end, who waits for an
answer); :class:`Phase` is where it stands in :mod:`kernlet.actors.life`'s sequence.
"""

from __future__ import annotations

import concurrent.futures
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kernlet.actors.reply import Reply

__all__ = ["Death", "Phase", "Work"]


class Phase(enum.StrEnum):
    NEW = "new"                    # nothing asked yet, or rebuilt from the log before Recover
    CREATING = "creating"          # running the create hooks
    RUNNING = "running"            # every hook up
    RESTARTING = "restarting"      # undoing and redoing the hooks from RESTART_FROM
    STOPPING = "stopping"          # kernel_terminating recorded; waiting for the step in flight
    TEARING_DOWN = "tearing-down"  # down hooks running
    DONE = "done"                  # kernel_terminated recorded; the actor stops


@dataclass
class Death:
    """What Docker said of the container's end."""

    oom: bool = False
    exit_code: int | None = None


@dataclass
class Work:
    """The kernel's working phase: everything the actor knows that the log does not say."""

    phase: Phase = Phase.NEW
    #: the hook (or step) whose coroutine is in flight, and whether a stop may cancel it
    step: str = ""
    inflight: concurrent.futures.Future[Any] | None = None
    cancellable: bool = False
    #: the hooks whose ``up`` started in this actor, in order: what a teardown undoes
    started: list[str] = field(default_factory=list)
    #: hook name -> what its ``up`` returned
    facts: dict[str, Any] = field(default_factory=dict)
    #: time.monotonic() of this create or restart
    t0: float = 0.0
    #: kernel_terminating is durable: the down hooks may start
    stop_durable: bool = False
    #: the container a restart is replacing (its death is expected)
    replaced: str = ""
    failure: BaseException | None = None
    death: Death = field(default_factory=Death)
    teardown_tries: int = 0
    create_done: Callable[[dict[str, Any]], None] | None = None
    restart_reply: Reply | None = None
    waiters: list[Reply] = field(default_factory=list)
