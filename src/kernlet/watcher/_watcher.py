"""The watcher of one agent: its actor, its loop side, its HTTP server, started and stopped as one.

:meth:`Watcher.start` and :meth:`Watcher.stop` are called from a plain thread (the agent's
start and stop), never from the loop nor from an actor. Start order: the watcher actor → on the
loop: the core (seeds the view from the log, listens to durable events, starts its ticker) →
the HTTP site. Stop reverses it; stopping also ends the dashboards' event streams, so that the
server's shutdown waits for no one.

``POST /agent/shutdown`` reaches :meth:`AgentService.stop` on a thread of its own (through the
watcher actor); a foreground agent (``kernlet agent``) notices the stop and exits.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pykka
from aiohttp import web

from kernlet.watcher._actor import Sample, ShutdownAgent, WatcherActor
from kernlet.watcher._app import build_app
from kernlet.watcher._core import WatcherCore
from kernlet.watcher._handle import AgentHandle
from kernlet.watcher._metrics import WatcherMetrics
from kernlet.watcher._usage import UsageTracker, read_meminfo

__all__ = ["Watcher", "node_capacity"]

log = logging.getLogger(__name__)


def node_capacity(proc_root: Path = Path("/proc")) -> dict[str, float]:
    """Cores and memory bytes of this machine (a blocking read: call it off the loop)."""
    total, _ = read_meminfo(proc_root)
    return {"cpu": float(os.cpu_count() or 1), "mem": float(total)}


class Watcher:
    """The operators' HTTP endpoint of one agent."""

    def __init__(
        self,
        handle: AgentHandle,
        *,
        capacity: Mapping[str, float] | None = None,
        tracker: UsageTracker | None = None,
        stop_agent: Callable[[], None] | None = None,
        metrics: WatcherMetrics | None = None,
    ) -> None:
        self.handle = handle
        self.cfg = handle.cfg.watcher
        self._capacity = dict(capacity) if capacity is not None else node_capacity()
        self._tracker = tracker or UsageTracker()
        self._stop_agent = stop_agent or handle.stop
        #: the agent's registry (the command server counts requests into it before the
        #: watcher starts); None: one of its own
        self._metrics = metrics
        self.actor: pykka.ActorRef[Any] | None = None
        self.core: WatcherCore | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- plain thread ----------------------------------------------------------------------------

    def start(self) -> str:
        """Start the actor, the loop side and the server; the dashboard's URL."""
        loop = self.handle.loop
        self.core = WatcherCore(
            self.handle,
            capacity=self._capacity,
            hostname=socket.gethostname(),
            request_sample=self._request_sample,
            metrics=self._metrics,
        )
        self.actor = WatcherActor.start(loop, self._tracker, self.core.set_usage, self._stop_agent)
        try:
            self.url = loop.run(self._serve(), timeout=30)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """Close the server and the loop side, stop the actor. Safe to call twice."""
        loop = self.handle.loop
        if (self._runner is not None or self.core is not None) and loop.loop.is_running():
            try:
                loop.run(self._close(), timeout=10)
            except Exception as exc:  # noqa: BLE001 - the agent's stop goes on regardless
                log.warning("watcher: closing: %s", exc)
        self._runner = None
        self.core = None
        if self.actor is not None:
            actor, self.actor = self.actor, None
            if actor.is_alive():
                actor.stop()

    # -- loop --------------------------------------------------------------------------------------

    async def _serve(self) -> str:
        assert self.core is not None
        await self.core.start()
        app = build_app(self.core, self.cfg.token, self._request_shutdown,
                        self.cfg.allowed_origins)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handle_signals=False)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self.cfg.host, self.cfg.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    async def _close(self) -> None:
        if self.core is not None:
            await self.core.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- from the loop to the actor ------------------------------------------------------------

    def _request_sample(self, containers: Mapping[str, str]) -> None:
        self._tell(Sample(dict(containers)))

    def _request_shutdown(self, who: str) -> None:
        self._tell(ShutdownAgent(requested_by=who))

    def _tell(self, message: Any) -> None:
        actor = self.actor
        if actor is None:
            return
        try:
            actor.tell(message)
        except pykka.ActorDeadError:
            pass
