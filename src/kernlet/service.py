"""Wiring of one agent process: loop thread, drivers, event log, actors, NATS service.

Start order: loop → event log (open, replay live kernels) → Docker → NATS (+ JetStream stream)
→ agent actor (re-adopts the live kernels of the log) → agent_started → command server,
Docker event watch, outbox. Stop (SIGTERM/SIGINT) lets go of kernels without touching their
containers: they are re-adopted at the next start. Destroying all kernels is a command.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Any

import pykka

from kernlet.actors.agent import AgentActor
from kernlet.actors.bus import CommandServer
from kernlet.actors.context import AgentContext
from kernlet.actors.image_jobs import interrupted_jobs
from kernlet.actors.loop import LoopThread
from kernlet.actors.messages import Relist
from kernlet.actors.network_book import owned as owned_networks
from kernlet.actors.node import NodeReporter
from kernlet.actors.outbox import Outbox
from kernlet.actors.pulls import interrupted_pulls
from kernlet.actors.steps import INTERNAL_NETWORK, ulimits
from kernlet.config import AgentConfig, ConfigError
from kernlet.drivers.docker import LABEL_AGENT, DockerDriver
from kernlet.drivers.nats import BusSettings, NatsDriver
from kernlet.drivers.ports import PortPool
from kernlet.drivers.resources import (
    Allocator,
    PluginInfo,
    apply_reserved,
    cuda_for_containers,
    detect_plugins,
    gather_hwinfo,
)
from kernlet.errors import DriverError
from kernlet.events import AGENT_STREAM, AgentStarted, AgentTerminated
from kernlet.periodic import every
from kernlet.sdnotify import notify
from kernlet.store import SQLiteEventLog
from kernlet.watcher import Watcher, WatcherMetrics

__all__ = ["AgentService"]

log = logging.getLogger(__name__)


class AgentService:
    """One running agent. ``start()`` and ``stop()`` are called from a plain thread."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.loop = LoopThread()
        self.store = SQLiteEventLog(cfg.log_path)
        self.docker = DockerDriver(cfg.docker.url)
        n = cfg.nats
        self.bus = NatsDriver(
            BusSettings(url=n.url, user=n.user, password=n.password, token=n.token,
                        creds=n.creds, tls=n.tls_context(), inbox_prefix=f"_INBOX_{cfg.agent.id}",
                        name=f"kernlet-agent-{cfg.agent.id}")
        )
        self.outbox = Outbox(self.bus, self.store, n.subject_prefix, cfg.agent.id)
        self.agent: pykka.ActorRef[Any] | None = None
        self.server: CommandServer | None = None
        #: the agent's Prometheus registry, served by the watcher
        self.metrics = WatcherMetrics()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = threading.Event()
        #: set once commands are served over NATS
        self._serving = threading.Event()
        self.ctx: AgentContext | None = None
        #: wall-clock time of the agent's start, and of the last relist of containers
        self.started_at = 0.0
        self.last_reconcile: float | None = None
        self.watcher: Watcher | None = None
        self.node: NodeReporter | None = None
        self.capacity: dict[str, float] = {}

    def start(self) -> None:
        t0 = time.monotonic()
        self.started_at = time.time()
        for d in (self.cfg.agent.var_dir, self.cfg.scratch_root, self.cfg.ipc_root,
                  self.cfg.log_path.parent):
            d.mkdir(parents=True, exist_ok=True)
        for note in ulimits(self.cfg)[1]:
            log.warning(note)
        self.loop.start()
        self.loop.run(self._open())
        live = self.loop.run(self.store.live_kernels())
        known = set(self.loop.run(self.store.kernel_ids()))
        ctx = AgentContext(
            cfg=self.cfg, loop=self.loop, store=self.store, docker=self.docker,
            outbox=self.outbox,
            create_slots=self.loop.run(_semaphore(self.cfg.agent.kernel_creation_concurrency)),
            teardown_slots=self.loop.run(_semaphore(self.cfg.agent.kernel_teardown_concurrency)),
        )
        self.ctx = ctx
        r = self.cfg.resource
        detected = detect_plugins(r.cuda, r.cuda_mode)
        self.plugins, ctx.cuda = cuda_for_containers(detected, r.cuda_access,
                                                     self._runtimes(detected))
        try:
            pools = apply_reserved(self.plugins, {"cpu": r.reserved_cpu, "mem": r.reserved_mem})
        except ValueError as exc:
            raise ConfigError(f"resource: {exc}") from exc
        #: what kernels may hold, after reserved amounts (the watcher's gauges)
        self.capacity = {p.spec.name: float(sum(p.devices.values())) for p in pools}
        self.agent = AgentActor.start(
            ctx, known, Allocator(pools),
            PortPool(*self.cfg.container.port_range), gather_hwinfo(self.plugins),
        )
        proxy = self.agent.proxy()
        agent_events = self.loop.run(self.store.read_stream(AGENT_STREAM))
        proxy.adopt(live, tuple(owned_networks(agent_events))).get()
        proxy.resume_pulls(interrupted_pulls(agent_events)).get()
        for failed in interrupted_jobs(agent_events):  # commits, pushes: recorded failed
            self.loop.run(ctx.record_agent(failed))
        self.loop.run(ctx.record_agent(AgentStarted(reason="started", agent_id=self.cfg.agent.id)))
        self.server = CommandServer(self.bus, self.agent, self.cfg.nats.subject_prefix,
                                    self.cfg.agent.id, self.cfg.limits.max_request,
                                    self.cfg.limits.max_code,
                                    observe=self.metrics.observe_request,
                                    kernels=ctx.kernel_refs)
        self.loop.run(self._serve())
        if not self._serving.wait(timeout=5.0):
            log.warning("NATS unreachable at %s: serving once it answers; events are kept "
                        "in the log until then", self.cfg.nats.url)
        self.node = NodeReporter(self.cfg, self.agent, self.bus, ctx.inventory,
                                 self._reconfigure)
        self.loop.run(self.node.start())
        if self.cfg.watcher.enabled:
            self._start_watcher()
        log.info("agent %s ready in %.2f s with %d live kernel(s) from the log",
                 self.cfg.agent.id, time.monotonic() - t0, len(live))

    def _runtimes(self, plugins: list[PluginInfo]) -> list[str]:
        """Docker's OCI runtimes, asked only when NVML found GPUs (is the NVIDIA one there?)."""
        if not any(p.key == "cuda" for p in plugins):
            return []
        try:
            return self.loop.run(self.docker.runtimes())
        except DriverError as exc:
            log.warning("cuda: cannot ask Docker for its runtimes: %s", exc)
            return []

    def _reconfigure(self, cfg: AgentConfig) -> None:
        """Cluster settings changed (etcd): new kernels use them. Connection settings and
        reserved resources only change at the next start."""
        self.cfg = cfg
        if self.ctx is not None:
            self.ctx.cfg = cfg

    @property
    def last_heartbeat(self) -> float | None:
        return self.node.last_heartbeat if self.node is not None else None

    def _start_watcher(self) -> None:
        watcher = Watcher(self, capacity=self.capacity, metrics=self.metrics)
        try:
            url = watcher.start()
        except OSError as exc:  # the agent serves kernels without its HTTP endpoint
            log.error("watcher: cannot listen on %s:%d: %s", self.cfg.watcher.host,
                      self.cfg.watcher.port, exc)
            return
        self.watcher = watcher
        log.info("watcher listening on %s (operations %s)", url,
                 "need the token" if self.cfg.watcher.token else "disabled: no token configured")

    async def _open(self) -> None:
        await self.store.open()
        await self.docker.ping()
        if self.cfg.container.network == "internal":
            await self.docker.ensure_network(INTERNAL_NETWORK, internal=True)

        async def resync() -> None:
            self.outbox.poke()

        self.bus.on_reconnect(resync)

    async def _on_nats(self) -> None:
        """First connection to NATS: serve commands, make sure the event stream exists."""
        assert self.server is not None
        await self.server.start()
        if self.cfg.nats.jetstream:
            await self.bus.ensure_stream(
                self.cfg.nats.stream_name, [f"{self.cfg.nats.subject_prefix}.events.>"]
            )
        self.outbox.poke()
        self._serving.set()

    async def _serve(self) -> None:
        self._tasks.append(asyncio.create_task(self.bus.connect_forever(self._on_nats),
                                               name="nats-connect"))
        self._tasks.append(asyncio.create_task(self.outbox.run(), name="outbox"))
        self._tasks.append(asyncio.create_task(self._watch_docker(), name="docker-events"))
        self._tasks.append(asyncio.create_task(self._relist_forever(), name="relist"))
        assert self.ctx is not None
        self._tasks.append(asyncio.create_task(every(
            lambda: self.cfg.agent.image_scan_interval, self.ctx.inventory.tick,
            "image-scan"), name="image-scan"))

    async def _relist_forever(self) -> None:
        """Every reconcile-interval: list this agent's containers, hand them to the agent."""
        agent = self.agent
        assert agent is not None

        async def relist() -> None:
            try:
                containers = await self.docker.list({LABEL_AGENT: self.cfg.agent.id})
                networks = await self.docker.networks({LABEL_AGENT: self.cfg.agent.id})
            except DriverError as exc:
                log.warning("relist failed: %s", exc)
                return
            agent.tell(Relist(tuple(containers), time.time(), tuple(networks)))
            self.last_reconcile = time.time()

        await every(lambda: self.cfg.agent.reconcile_interval, relist, "relist",
                    stop_on=(pykka.ActorDeadError,))

    async def _watch_docker(self) -> None:
        assert self.agent is not None
        async for ev in self.docker.events({LABEL_AGENT: self.cfg.agent.id}):
            try:
                self.agent.tell(ev)
            except pykka.ActorDeadError:
                return

    def stop(self) -> None:
        """Shut down, leaving kernels running. Safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.watcher is not None:
            self.watcher.stop()
        if self.node is not None:
            try:
                self.loop.run(self.node.stop(), timeout=10)
            except Exception as exc:  # noqa: BLE001 - shutdown goes on whatever happens
                log.warning("stopping the node reporter: %s", exc)
        if self.agent is not None and self.agent.is_alive() and self.ctx is not None:
            proxy = self.agent.proxy()
            proxy.shutdown_kernels().get()
            deadline = time.monotonic() + 10
            while proxy.kernels_alive().get() and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                self.loop.run(self.ctx.record_agent(AgentTerminated(
                    reason="shutdown", agent_id=self.cfg.agent.id)))
                self.loop.run(self._flush_outbox(), timeout=5)
            except Exception as exc:  # noqa: BLE001 - shutdown goes on whatever happens
                log.warning("could not record agent_terminated: %s", exc)
            self.agent.stop()
        pykka.ActorRegistry.stop_all()
        if self.loop.loop.is_running():
            try:
                self.loop.run(self._close(), timeout=10)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing drivers: %s", exc)
        self.loop.stop()

    async def _flush_outbox(self) -> None:
        for _ in range(50):
            if await self.store.undelivered_count() == 0:
                return
            await asyncio.sleep(0.05)

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.close()
        await self.docker.close()
        await self.store.close()

    def run_until_signalled(self) -> int:
        """Start, then block until SIGTERM or SIGINT; then stop (kernels keep running).

        Returns the process's exit status: 0 after a signal or a shutdown request, 1 when
        the root actor died (never a live process with a dead core: systemd restarts the
        agent and recovery runs)."""
        done = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("signal %d: shutting down (kernels keep running)", signum)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        # serving: tell systemd (Type=notify) and whoever reads the log
        log.info("kernlet agent %s ready", self.cfg.agent.id)
        _notify(f"READY=1\nSTATUS=serving as {self.cfg.agent.id}")
        # ends on a signal, or when something else stopped the agent (POST /agent/shutdown)
        while not done.wait(0.5) and not self._stopped.is_set():
            if self.agent is not None and not self.agent.is_alive():
                log.critical("the agent actor is dead: exiting with status 1 so that the "
                             "agent is restarted and recovers its kernels")
                _notify("STOPPING=1")
                self.stop()
                return 1
        _notify("STOPPING=1")
        self.stop()
        return 0


def _notify(state: str) -> None:
    try:
        notify(state)
    except OSError as exc:  # a broken NOTIFY_SOCKET must not stop the agent
        log.warning("sd_notify %s: %s", state.split("\n", 1)[0], exc)


async def _semaphore(n: int) -> asyncio.Semaphore:
    return asyncio.Semaphore(n)
