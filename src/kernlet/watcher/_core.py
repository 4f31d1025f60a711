"""The watcher's loop side: what the HTTP handlers ask for, gathered without blocking the loop.

:class:`WatcherCore` owns the live view, the SSE hub, the metrics and the last usage sample. It
listens to durable events (``AgentContext.listeners``), runs two small background tasks (a
loop-lag probe and a ticker that asks the watcher actor for a usage sample and pushes the
status to connected dashboards), and answers status, health and kernel questions. Every method
runs on the loop; the only way out is ``tell`` (to the agent actor through :class:`AgentLink`,
and to the watcher actor).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kernlet import __version__
from kernlet.actors.agent import summary
from kernlet.events import (
    AGENT_STREAM,
    Envelope,
    KernelState,
    apply,
    event_to_dict,
    is_live,
)
from kernlet.periodic import every
from kernlet.watcher._handle import AgentHandle
from kernlet.watcher._history import UsageHistory
from kernlet.watcher._link import AgentLink
from kernlet.watcher._live import Hub, KernelView, sse
from kernlet.watcher._metrics import WatcherMetrics
from kernlet.watcher._status import Check, Identity, NodeStatus, build_status, reconcile_check
from kernlet.watcher._usage import Usage

__all__ = ["LOOP_LAG_LIMIT", "TICK_SECONDS", "WatcherCore"]

log = logging.getLogger(__name__)

#: how often usage is sampled and the status pushed to dashboards (seconds)
TICK_SECONDS = 2.0
#: a loop lagging more than this is unhealthy (seconds)
LOOP_LAG_LIMIT = 1.0
#: how long one health check may take (seconds)
CHECK_TIMEOUT = 2.0
_LAG_PROBE = 0.5


class WatcherCore:
    """Loop-side state and queries of one agent's watcher."""

    def __init__(
        self,
        handle: AgentHandle,
        *,
        capacity: Mapping[str, float],
        hostname: str,
        request_sample: Callable[[Mapping[str, str]], None],
        clock: Callable[[], float] = time.time,
        metrics: WatcherMetrics | None = None,
    ) -> None:
        self.handle = handle
        self.link = AgentLink(handle)
        self.view = KernelView(handle.store)
        self.hub = Hub()
        self.metrics = metrics or WatcherMetrics()
        self.usage = Usage()
        self.history = UsageHistory()
        self.loop_lag = 0.0
        self.capacity = dict(capacity)
        cfg = handle.cfg.agent
        self.identity = Identity(cfg.id, __version__, cfg.region, cfg.scaling_group, hostname)
        self._request_sample = request_sample
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle (loop) ------------------------------------------------------------------------

    async def start(self, background: bool = True) -> None:
        """Seed the view, listen to durable events, start the background tasks."""
        await self.view.seed()
        ctx = self.handle.ctx
        if ctx is not None:
            ctx.listeners.append(self.on_event)
        if background:
            self._spawn(self._probe_lag(), "watcher-lag")
            self._spawn(self._tick(), "watcher-tick")

    async def close(self) -> None:
        """Stop listening, end the event streams, cancel and await the background tasks."""
        ctx = self.handle.ctx
        if ctx is not None:
            with contextlib.suppress(ValueError):
                ctx.listeners.remove(self.on_event)
        self.hub.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(_LAG_PROBE)
            self.loop_lag = max(0.0, loop.time() - t0 - _LAG_PROBE)

    async def _tick(self) -> None:
        async def tick() -> None:
            self._request_sample(self.view.containers())
            if self.hub.subscribers:
                status = await self.status()
                self.hub.publish(sse("status", status.to_dict()))

        await every(TICK_SECONDS, tick, "watcher tick")

    # -- events (loop) ----------------------------------------------------------------------------

    def on_event(self, env: Envelope) -> None:
        """A durable event: count it, fold it into the view, push it to the dashboards."""
        if env.kernel_id == AGENT_STREAM:
            self.metrics.observe(env, None, None)
            self.hub.publish(sse("agent", event_to_dict(env)))
            return
        change = self.view.apply(env)
        if change is None:
            self.metrics.observe(env, None, None)
            self._spawn(self._heal(env), f"watcher-reload-{env.kernel_id}")
            return
        before, after = change
        self.metrics.observe(env, before, after)
        self._publish_kernel(env, after)

    async def _heal(self, env: Envelope) -> None:
        state = await self.view.reload(env.kernel_id)
        if state is not None:
            self._publish_kernel(env, state)

    def _publish_kernel(self, env: Envelope, state: KernelState) -> None:
        event = event_to_dict(env)
        event["state"] = state.state.value
        kernel = self._with_usage(summary(state))
        self.hub.publish(sse("kernel", {"event": event, "kernel": kernel}))

    def set_usage(self, usage: Usage) -> None:
        """A new usage sample from the watcher actor (loop)."""
        self.usage = usage
        self.history.add(usage)

    # -- queries (loop) ---------------------------------------------------------------------------

    def _with_usage(self, kernel: dict[str, Any]) -> dict[str, Any]:
        """The summary with the kernel's last usage sample (None unless it is live)."""
        kid = str(kernel.get("id"))
        u = self.usage.kernels.get(kid) if self.view.get(kid) is not None else None
        return {**kernel, "usage": u.to_dict() if u else None}

    async def kernels(self, *, all: bool = True) -> list[dict[str, Any]]:
        """Kernel summaries from the agent actor, each with its last usage sample."""
        kernels = await self.link.kernels(all=all)
        kernels.sort(key=lambda k: (float(k.get("created_at") or 0.0), str(k.get("id"))))
        return [self._with_usage(k) for k in kernels]

    async def kernel(self, kernel_id: str) -> dict[str, Any] | None:
        """A kernel's summary and its full event history, each event with the state it led to."""
        envs = await self.handle.store.read_stream(kernel_id)
        if not envs:
            return None
        state: KernelState | None = None
        events: list[dict[str, Any]] = []
        for env in envs:
            state = apply(state, env)
            d = event_to_dict(env)
            d["state"] = state.state.value
            events.append(d)
        assert state is not None
        return {**self._with_usage(summary(state)), "live": is_live(state), "events": events}

    async def status(self) -> NodeStatus:
        store = self.handle.store
        try:
            live = await self.link.kernels(all=False, timeout=CHECK_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - report what the log says instead
            log.warning("status: the agent actor did not list its kernels: %s", exc)
            live = [summary(s) for s in (await store.live_kernels()).values()]
        total = len(await store.kernel_ids())
        figures = (await store.count(), await store.size_bytes(), await store.undelivered_count())
        outbox = self.handle.outbox
        return build_status(
            identity=self.identity,
            started_at=self.handle.started_at,
            now=self._clock(),
            capacity=self.capacity,
            live=live,
            kernels_total=max(total, len(live)),
            log_figures=figures,
            nats=(self.handle.bus.connected, outbox.published, outbox.last_error),
            heartbeat_at=_optional_time(getattr(self.handle, "last_heartbeat", None)),
            reconcile_at=self.handle.last_reconcile,
            loop_lag=self.loop_lag,
            usage=self._live_usage(),
        )

    def _live_usage(self) -> Usage:
        """The last sample without the kernels that terminated since it was taken."""
        u = self.usage
        kernels = {k: v for k, v in u.kernels.items() if self.view.get(k) is not None}
        return Usage(at=u.at, host=u.host, kernels=kernels)

    async def health(self) -> dict[str, Check]:
        """Every check, by name; the agent is healthy when all are ok."""

        async def agent() -> Check:
            await self.link.ping(CHECK_TIMEOUT)
            return Check(True, "answers")

        async def docker() -> Check:
            await asyncio.wait_for(self.handle.docker.ping(), CHECK_TIMEOUT)
            return Check(True, "answers")

        async def event_log() -> Check:
            seq = await asyncio.wait_for(self.handle.store.last_seq(AGENT_STREAM), CHECK_TIMEOUT)
            return Check(True, f"answers (agent stream at #{seq})")

        names = ("agent", "docker", "event_log")
        results = await asyncio.gather(agent(), docker(), event_log(), return_exceptions=True)
        checks: dict[str, Check] = {
            "loop": Check(self.loop_lag < LOOP_LAG_LIMIT, f"lag {self.loop_lag * 1000:.0f} ms"),
            "nats": Check(self.handle.bus.connected,
                          "connected" if self.handle.bus.connected else "not connected"),
        }
        for name, result in zip(names, results, strict=True):
            if isinstance(result, Check):
                checks[name] = result
            else:
                why = str(result) or type(result).__name__
                checks[name] = Check(False, f"{type(result).__name__}: {why}")
        checks["reconcile"] = reconcile_check(self.handle.last_reconcile, self._clock())
        return dict(sorted(checks.items()))


def _optional_time(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None
