"""What every actor of one agent shares: config, the loop, the log and the drivers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from kernlet.actors.loop import LoopThread
from kernlet.actors.outbox import Outbox
from kernlet.config import AgentConfig
from kernlet.drivers.docker import DockerDriver
from kernlet.events import Envelope
from kernlet.store import EventLog

__all__ = ["AgentContext"]


@dataclass
class AgentContext:
    cfg: AgentConfig
    loop: LoopThread
    store: EventLog
    docker: DockerDriver
    outbox: Outbox
    #: bounds concurrent container creates+starts (created on the loop by the agent)
    create_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))

    async def persist(self, env: Envelope) -> None:
        """Append durably, then hand to the outbox (loop side)."""
        await self.store.append([env])
        self.outbox.enqueue(env)
