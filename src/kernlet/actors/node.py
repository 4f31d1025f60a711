"""Reporting the node: heartbeat (NATS + etcd liveness), stats (Redis), cluster settings (etcd).

Each is a periodic task on the loop that asks the agent actor for a snapshot (``Describe``,
a tell with a Reply; never a blocking ask) and talks to one outside service. None of them dies
on an error of that service: the reference agent's heartbeat loop died after one Redis error;
here every tick catches, logs, counts and goes on, and the service is used again as soon as it
answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import time
from collections.abc import Callable
from typing import Any

import pykka

from kernlet import __version__
from kernlet.actors.inventory import ImageInventory
from kernlet.actors.messages import Describe
from kernlet.actors.reply import Reply
from kernlet.config import AgentConfig, apply_cluster
from kernlet.drivers.etcd import AgentLease, EtcdDriver
from kernlet.drivers.nats import NatsDriver
from kernlet.drivers.redis import StatsWriter
from kernlet.drivers.stats import StatsCollector
from kernlet.errors import KernletError
from kernlet.events import pack
from kernlet.periodic import every
from kernlet.protocol import heartbeat_subject

__all__ = ["NodeReporter"]

log = logging.getLogger(__name__)


class NodeReporter:
    """Heartbeat, stats and cluster settings of one agent. Runs on the agent's loop."""

    def __init__(
        self,
        cfg: AgentConfig,
        agent: pykka.ActorRef[Any],
        bus: NatsDriver,
        inventory: ImageInventory,
        on_config: Callable[[AgentConfig], None],
    ) -> None:
        self.cfg = cfg
        #: the local file's config: cluster settings are always applied on top of this one
        self._local = cfg
        self._agent = agent
        self._bus = bus
        self._inventory = inventory
        self._on_config = on_config
        self.etcd: EtcdDriver | None = None
        self.lease: AgentLease | None = None
        self.writer: StatsWriter | None = None
        self.collector: StatsCollector | None = None
        #: wall-clock time of the last heartbeat published, and failures counted
        self.last_heartbeat: float | None = None
        self.heartbeat_failures = 0
        self._tasks: list[asyncio.Task[Any]] = []

    # -- snapshot -------------------------------------------------------------------------------

    async def describe(self) -> dict[str, Any]:
        reply = Reply.new(asyncio.get_running_loop())
        self._agent.tell(Describe(reply))
        return dict(await asyncio.wait_for(reply.future, 10))

    async def agent_info(self) -> dict[str, Any]:
        """The heartbeat's content (the reference's agent_info, plus kernels)."""
        snap = await self.describe()
        if self._inventory.last_scan is None:  # before the periodic rescan's first round
            await self._inventory.rescan()
        a = self.cfg.agent
        return {
            "id": a.id,
            "region": a.region,
            "scaling_group": a.scaling_group,
            "addr": self.cfg.nats.url,
            "host": self.cfg.advertised_host,
            "version": __version__,
            "architecture": platform.machine(),
            "resource_slots": snap["resource_slots"],
            "slots_used": snap["slots_used"],
            "compute_plugins": snap["hwinfo"],
            # the last rescan's (kernlet.actors.inventory): name, id, digests, size, labels
            "images": self._inventory.heartbeat(),
            "kernels": snap["kernels"],
            "time": time.time(),
        }

    # -- start / stop ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Read cluster settings (if etcd is on), then start the periodic tasks."""
        e = self.cfg.etcd
        if e.enabled:
            self.etcd = EtcdDriver(e.host, e.port, e.namespace, user=e.user,
                                   password=e.password, timeout=e.timeout)
            known: dict[str, str] | None = None
            try:
                known = await self.etcd.get_config()
                self._apply(known)
            except KernletError as exc:
                log.warning("etcd unreachable (%s): running on local settings", exc)
            self.lease = self.etcd.liveness(self.cfg.agent.id, "{}", ttl=e.lease_ttl)
            self._spawn(self._watch(known), "etcd-watch")
        self._spawn(every(lambda: self.cfg.heartbeat.interval, self.heartbeat), "heartbeat")
        if self.cfg.stats.enabled:
            s = self.cfg.stats
            self.writer = StatsWriter(self.cfg.agent.id, self.cfg.redis.url,
                                      node_ttl=s.node_ttl, kernel_ttl=s.kernel_ttl)
            self.collector = StatsCollector(self.cfg.docker.url, self.cfg.agent.var_dir)
            self._spawn(self.writer.run(self.sample, s.interval), "stats")

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.lease is not None:
            await self.lease.stop(revoke=True)
        for closer in (self.etcd, self.writer, self.collector):
            if closer is not None:
                try:
                    await closer.close()
                except Exception as exc:  # noqa: BLE001 - shutting down regardless
                    log.debug("closing %r: %s", closer, exc)

    # -- the periodic work ----------------------------------------------------------------------

    async def heartbeat(self) -> None:
        info = await self.agent_info()
        try:
            await self._bus.publish(
                heartbeat_subject(self.cfg.nats.subject_prefix, self.cfg.agent.id), pack(info))
            self.last_heartbeat = time.time()
        except KernletError as exc:
            self.heartbeat_failures += 1
            log.warning("heartbeat not published: %s", exc)
        if self.lease is not None:
            summary = {"version": __version__, "addr": self.cfg.nats.url, "time": info["time"],
                       "kernels": len(info["kernels"])}
            if self.lease.alive:
                await self.lease.update(json.dumps(summary))
            else:
                await self.lease.start()

    async def sample(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Node stats and each live kernel's container stats, keyed by kernel id."""
        assert self.collector is not None
        snap = await self.describe()
        by_container = {k["container_id"]: k["id"] for k in snap["kernels"]
                        if k["container_id"] and k["state"] == "running"}
        node, containers = await self.collector.sample(list(by_container))
        return node.to_dict(), {by_container[cid]: st.to_dict()
                                for cid, st in containers.items() if cid in by_container}

    async def _watch(self, known: dict[str, str] | None) -> None:
        assert self.etcd is not None
        current = dict(known or {})
        async for change in self.etcd.watch_config(known):
            if change.value is None:
                current.pop(change.key, None)
            else:
                current[change.key] = change.value
            self._apply(current)

    def _apply(self, cluster: dict[str, str]) -> None:
        new, refused = apply_cluster(self._local, cluster)
        if refused:
            log.warning("etcd settings not applied (local only, unknown or invalid): %s",
                        ", ".join(refused))
        if new != self.cfg:
            log.info("cluster settings applied from etcd")
            self.cfg = new
            self._on_config(new)
