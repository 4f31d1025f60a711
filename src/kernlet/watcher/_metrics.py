"""Prometheus metrics of one agent, in a registry of its own (several agents may share a process).

Rendered by ``GET /metrics`` in the Prometheus text format, or in OpenMetrics when the
scraper asks for it (``Accept: application/openmetrics-text``):

- the client library's process, platform and GC collectors (``process_*``, ``python_*``);
- requests over NATS by command and error type (``kernlet_requests_total``) and their
  duration per command (``kernlet_request_duration_seconds``), fed by the command server;

- counters and a histogram fed by the durable events as they are appended (lifecycle
  transitions, events by type, finished executions, create latency), and the count of
  requests the watcher refused (by reason);
- gauges read from the :class:`~kernlet.watcher._status.NodeStatus` snapshot taken for the
  scrape (kernels by state, event log figures, NATS, heartbeat and reconcile age, per-kernel CPU
  and memory), exported by a custom collector so that a terminated kernel's series disappear.

Names (prefix ``kernlet_``): see docs/watcher.md.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from kernlet.events import Envelope, ExecutionFinished, KernelStarted, KernelState
from kernlet.watcher._guard import REASONS
from kernlet.watcher._status import NodeStatus

__all__ = ["CONTENT_TYPE", "CREATE_BUCKETS", "OPENMETRICS_TYPE", "REQUEST_BUCKETS",
           "WatcherMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = openmetrics.CONTENT_TYPE_LATEST

#: seconds from create request to running kernel
CREATE_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0)
#: seconds from a request's arrival to its reply (an execute runs as long as the code does)
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: the unit in a slot's gauge names (other slots, e.g. cuda.device and cuda.shares: devices)
SLOT_UNITS = {"cpu": "cores", "mem": "bytes"}


class _SnapshotCollector(Collector):
    """Gauges from the last status snapshot (set right before each scrape)."""

    def __init__(self) -> None:
        self.status: NodeStatus | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.status
        if s is None:
            return
        info = GaugeMetricFamily("kernlet_agent_info", "The agent's identity",
                                 labels=["agent_id", "version"])
        info.add_metric([s.identity.agent_id, s.identity.version], 1.0)
        yield info
        yield GaugeMetricFamily("kernlet_uptime_seconds", "Seconds since the agent started",
                                value=s.uptime)
        kernels = GaugeMetricFamily("kernlet_kernels", "Kernels by lifecycle state "
                                    "(terminated: every terminated kernel in the log)",
                                    labels=["state"])
        for state, n in sorted(s.by_state.items()):
            kernels.add_metric([state], float(n))
        yield kernels
        for what, doc, table in (("capacity", "What the node offers kernels", s.capacity),
                                 ("allocated", "What live kernels hold", s.used)):
            by_unit: dict[str, GaugeMetricFamily] = {}
            for slot, amount in sorted(table.items()):
                unit = SLOT_UNITS.get(slot, "devices")
                if unit not in by_unit:
                    by_unit[unit] = GaugeMetricFamily(
                        f"kernlet_node_{what}_{unit}", f"{doc}, in {unit}, by slot",
                        labels=["slot"])
                by_unit[unit].add_metric([slot], float(amount))
            yield from by_unit.values()
        if s.usage.host is not None:
            yield GaugeMetricFamily("kernlet_host_cpu_ratio", "Share of the host's cores busy",
                                    value=s.usage.host.cpu_ratio)
            yield GaugeMetricFamily("kernlet_host_memory_available_bytes",
                                    "Host memory available", value=s.usage.host.mem_available)
        yield GaugeMetricFamily("kernlet_event_log_events", "Events in the event log",
                                value=s.log_events)
        yield GaugeMetricFamily("kernlet_event_log_bytes", "Size of the event log",
                                value=s.log_bytes)
        yield GaugeMetricFamily("kernlet_event_log_undelivered",
                                "Events written but not yet acknowledged by NATS",
                                value=s.log_undelivered)
        yield CounterMetricFamily("kernlet_events_published", "Events published to NATS",
                                  value=s.published)
        yield GaugeMetricFamily("kernlet_nats_connected", "1 when connected to NATS",
                                value=1.0 if s.nats_connected else 0.0)
        yield GaugeMetricFamily("kernlet_loop_lag_seconds", "Lag of the agent's event loop",
                                value=s.loop_lag)
        heartbeat = s.age(s.heartbeat_at)
        if heartbeat is not None:
            yield GaugeMetricFamily("kernlet_heartbeat_age_seconds",
                                    "Seconds since the last heartbeat", value=heartbeat)
        reconcile = s.age(s.reconcile_at)
        if reconcile is not None:
            yield GaugeMetricFamily("kernlet_reconcile_age_seconds",
                                    "Seconds since the last relist of containers", value=reconcile)
        cpu = CounterMetricFamily("kernlet_kernel_cpu_seconds", "CPU time used by a kernel",
                                  labels=["kernel_id"])
        ratio = GaugeMetricFamily("kernlet_kernel_cpu_usage_cores",
                                  "Cores a kernel kept busy over the last sample",
                                  labels=["kernel_id"])
        mem = GaugeMetricFamily("kernlet_kernel_memory_bytes", "Memory used by a kernel",
                                labels=["kernel_id"])
        for kid, u in sorted(s.usage.kernels.items()):
            cpu.add_metric([kid], u.cpu_seconds)
            ratio.add_metric([kid], u.cpu_ratio)
            mem.add_metric([kid], float(u.memory_bytes))
        yield cpu
        yield ratio
        yield mem


class WatcherMetrics:
    """The agent's metrics. ``observe`` runs on the loop; rendering is cheap and I/O-free."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # the process's own figures (CPU, memory, fds, start time), Python's version and GC
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "kernlet_requests", "Requests over NATS, by command and error type (none: answered "
            "with a result)", ["command", "error"], registry=r,
        )
        self.request_seconds = Histogram(
            "kernlet_request_duration_seconds",
            "Seconds from a request's arrival to its reply, by command",
            ["command"], buckets=REQUEST_BUCKETS, registry=r,
        )
        self.events = Counter("kernlet_events", "Durable events appended, by type", ["type"],
                              registry=r)
        self.transitions = Counter(
            "kernlet_lifecycle_transitions",
            "Kernel lifecycle state changes (from_state is 'none' for a new kernel)",
            ["from_state", "to_state"], registry=r,
        )
        self.executions = Counter("kernlet_executions", "Runs of user code finished, by status",
                                  ["status"], registry=r)
        self.create_seconds = Histogram(
            "kernlet_kernel_create_seconds", "Seconds from create request to running kernel",
            buckets=CREATE_BUCKETS, registry=r,
        )
        self.auth_failures = Counter(
            "kernlet_watcher_auth_failures",
            "Requests the watcher refused, by reason (missing-token, bad-token, cross-origin, "
            "no-token-configured)",
            ["reason"], registry=r,
        )
        for reason in REASONS:  # every series exists from the start, at 0
            self.auth_failures.labels(reason)
        self._snapshot = _SnapshotCollector()
        r.register(self._snapshot)

    def observe(self, env: Envelope, before: KernelState | None, after: KernelState | None) -> None:
        """Count one durable event; ``before``/``after`` are the kernel's states (None: unknown)."""
        self.events.labels(env.type).inc()
        body = env.body
        if isinstance(body, KernelStarted):
            seconds = body.info.get("create_seconds")
            if isinstance(seconds, (int, float)):
                self.create_seconds.observe(float(seconds))
        elif isinstance(body, ExecutionFinished):
            self.executions.labels(body.status or "unknown").inc()
        if after is not None:
            origin = before.state.value if before is not None else "none"
            if origin != after.state.value:
                self.transitions.labels(origin, after.state.value).inc()

    def observe_request(self, command: str, error: str | None, seconds: float) -> None:
        """Count one answered request (``error``: the reply's error type, None: a result)."""
        self.requests.labels(command, error or "none").inc()
        self.request_seconds.labels(command).observe(seconds)

    def render(self, status: NodeStatus, accept: str = "") -> tuple[bytes, str]:
        """The exposition and its content type, with gauges from ``status``: OpenMetrics when
        ``accept`` (the request's Accept header) asks for it, else the Prometheus text."""
        self._snapshot.status = status
        if "application/openmetrics-text" in accept:
            text: bytes = openmetrics.generate_latest(self.registry)  # type: ignore[no-untyped-call]
            return text, OPENMETRICS_TYPE
        return generate_latest(self.registry), CONTENT_TYPE
