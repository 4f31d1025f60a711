"""Prometheus metrics of one agent, in a registry of its own (several agents may share a process).

Two kinds, both rendered by ``GET /metrics`` in the Prometheus text format:

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

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from kernlet.events import Envelope, ExecutionFinished, KernelStarted, KernelState
from kernlet.watcher._guard import REASONS
from kernlet.watcher._status import NodeStatus

__all__ = ["CONTENT_TYPE", "CREATE_BUCKETS", "WatcherMetrics"]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: seconds from create request to running kernel
CREATE_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0)


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
        for name, doc, table in (
            ("kernlet_node_capacity", "Node capacity by slot (cpu: cores, mem: bytes)",
             s.capacity),
            ("kernlet_node_allocated", "Slots allocated to live kernels", s.used),
        ):
            g = GaugeMetricFamily(name, doc, labels=["slot"])
            for slot, amount in sorted(table.items()):
                g.add_metric([slot], float(amount))
            yield g
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
        ratio = GaugeMetricFamily("kernlet_kernel_cpu_ratio",
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

    def render(self, status: NodeStatus) -> bytes:
        """The text exposition, with gauges from ``status``."""
        self._snapshot.status = status
        return generate_latest(self.registry)
