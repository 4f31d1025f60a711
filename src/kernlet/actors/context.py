"""What every actor of one agent shares: config, the loop, the log and the drivers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from kernlet.actors.loop import LoopThread
from kernlet.actors.outbox import Outbox
from kernlet.config import AgentConfig
from kernlet.drivers.docker import DockerDriver
from kernlet.events import Envelope
from kernlet.store import EventLog

__all__ = ["AgentContext"]

log = logging.getLogger(__name__)


@dataclass
class AgentContext:
    cfg: AgentConfig
    loop: LoopThread
    store: EventLog
    docker: DockerDriver
    outbox: Outbox
    #: bounds concurrent container creates+starts (created on the loop by the agent)
    create_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    #: called on the loop with each event once it is durable (watcher, metrics)
    listeners: list[Callable[[Envelope], None]] = field(default_factory=list)

    async def persist(self, env: Envelope) -> None:
        """Append durably, then hand to the outbox and the listeners (loop side)."""
        await self.store.append([env])
        self.outbox.enqueue(env)
        for listener in self.listeners:
            try:
                listener(env)
            except Exception:  # noqa: BLE001 - a listener must never break the log path
                log.exception("event listener failed")
