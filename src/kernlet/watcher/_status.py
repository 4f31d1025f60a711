"""The node's status as one immutable snapshot, and the health rules, as pure functions.

:class:`NodeStatus` is what ``GET /status`` returns, what the dashboard's gauges show and what
``/metrics`` exports; the loop gathers its inputs (see ``WatcherCore.status``) and
:func:`build_status` does the arithmetic. :func:`reconcile_check` is the one health rule that
needs a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kernlet.events import State
from kernlet.watcher._usage import Usage

__all__ = [
    "RECONCILE_MAX_AGE",
    "Check",
    "Identity",
    "NodeStatus",
    "build_status",
    "reconcile_check",
]

#: a reconcile older than this makes the agent unhealthy (seconds)
RECONCILE_MAX_AGE = 30.0


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the health report."""

    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


def reconcile_check(last: float | None, now: float, max_age: float = RECONCILE_MAX_AGE) -> Check:
    """Healthy when the last relist of containers is recent; "not yet run" is not a failure."""
    if last is None:
        return Check(True, "not yet run")
    age = now - last
    if age > max_age:
        return Check(False, f"last run {age:.0f} s ago (more than {max_age:.0f} s)")
    return Check(True, f"last run {age:.1f} s ago")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the agent is."""

    agent_id: str
    version: str
    region: str
    scaling_group: str
    hostname: str


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """Everything the watcher reports about the node at one moment."""

    identity: Identity
    #: wall-clock time of the agent's start, and of this snapshot
    started_at: float
    now: float
    #: slot name -> capacity of the node ("cpu" in cores, "mem" in bytes)
    capacity: Mapping[str, float]
    #: slot name -> amount allocated to live kernels
    used: Mapping[str, float]
    #: lifecycle state -> number of kernels (every state present, terminated ones included)
    by_state: Mapping[str, int]
    live: int
    log_events: int
    log_bytes: int
    log_undelivered: int
    nats_connected: bool
    published: int
    publish_error: str
    heartbeat_at: float | None
    reconcile_at: float | None
    loop_lag: float
    usage: Usage = field(default_factory=Usage)

    @property
    def uptime(self) -> float:
        return max(0.0, self.now - self.started_at)

    @property
    def free(self) -> dict[str, float]:
        return {k: max(0.0, v - self.used.get(k, 0.0)) for k, v in self.capacity.items()}

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    def age(self, at: float | None) -> float | None:
        return None if at is None else max(0.0, self.now - at)

    def to_dict(self) -> dict[str, Any]:
        ident = self.identity
        return {
            "agent": {
                "id": ident.agent_id,
                "version": ident.version,
                "region": ident.region,
                "scaling_group": ident.scaling_group,
                "hostname": ident.hostname,
                "started_at": self.started_at,
                "uptime_seconds": round(self.uptime, 3),
            },
            "resources": {
                "capacity": dict(self.capacity),
                "used": {k: self.used.get(k, 0.0) for k in self.capacity},
                "free": self.free,
            },
            "host": self.usage.host.to_dict() if self.usage.host else None,
            "kernels": {"live": self.live, "total": self.total, "by_state": dict(self.by_state)},
            "event_log": {
                "events": self.log_events,
                "bytes": self.log_bytes,
                "undelivered": self.log_undelivered,
            },
            "nats": {
                "connected": self.nats_connected,
                "published": self.published,
                "last_error": self.publish_error,
            },
            "heartbeat_age_seconds": self.age(self.heartbeat_at),
            "reconcile_age_seconds": self.age(self.reconcile_at),
            "loop_lag_seconds": round(self.loop_lag, 4),
            "usage": {kid: u.to_dict() for kid, u in self.usage.kernels.items()},
        }


def _amount(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def build_status(
    *,
    identity: Identity,
    started_at: float,
    now: float,
    capacity: Mapping[str, float],
    live: Iterable[Mapping[str, Any]],
    kernels_total: int,
    log_figures: tuple[int, int, int],
    nats: tuple[bool, int, str],
    heartbeat_at: float | None,
    reconcile_at: float | None,
    loop_lag: float,
    usage: Usage,
) -> NodeStatus:
    """The snapshot from its inputs: ``live`` are the agent's live kernel summaries."""
    by_state = {s.value: 0 for s in State}
    used = dict.fromkeys(capacity, 0.0)
    n_live = 0
    for kernel in live:
        n_live += 1
        state = str(kernel.get("state", ""))
        by_state[state] = by_state.get(state, 0) + 1
        for slot, amount in (kernel.get("slots") or {}).items():
            used[slot] = used.get(slot, 0.0) + _amount(amount)
    by_state[State.TERMINATED.value] = max(0, kernels_total - n_live)
    events, size, undelivered = log_figures
    connected, published, error = nats
    return NodeStatus(
        identity=identity, started_at=started_at, now=now, capacity=dict(capacity), used=used,
        by_state=by_state, live=n_live, log_events=events, log_bytes=size,
        log_undelivered=undelivered,
        nats_connected=connected, published=published, publish_error=error,
        heartbeat_at=heartbeat_at, reconcile_at=reconcile_at, loop_lag=loop_lag, usage=usage,
    )
