"""What every actor of one agent shares: config, the loop, the log and the drivers."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from kernlet.actors.inventory import ImageInventory
from kernlet.actors.loop import LoopThread
from kernlet.actors.outbox import Outbox
from kernlet.config import AgentConfig
from kernlet.drivers.container_runtime import ContainerRuntime
from kernlet.drivers.resources import CudaAccess
from kernlet.events import AGENT_STREAM, Envelope, EventBody, new_envelope
from kernlet.store import EventLog

__all__ = ["AgentContext"]

log = logging.getLogger(__name__)


@dataclass
class AgentContext:
    cfg: AgentConfig
    loop: LoopThread
    store: EventLog
    docker: ContainerRuntime
    outbox: Outbox
    #: bounds concurrent container creates+starts (created on the loop by the agent)
    create_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    #: bounds concurrent teardowns (the down hooks of a kernel hold one slot)
    teardown_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    #: how this node gives GPUs to containers (None: it has none it can give); set at start
    cuda: CudaAccess | None = None
    #: the live kernels' actors by kernel id: written by the agent actor only (its registry),
    #: read by the command server on the loop to hand an ``execute`` straight to its kernel
    kernel_refs: dict[str, pykka.ActorRef[Any]] = field(default_factory=dict)
    #: called on the loop with each event once it is durable (watcher, metrics)
    listeners: list[Callable[[Envelope], None]] = field(default_factory=list)
    #: the node's kernel images (heartbeat, list_images), rescanned on the loop
    inventory: ImageInventory = field(init=False)
    _crash_count: int = 0
    #: serializes appends to the agent's own stream (its seq comes from the store)
    _agent_stream: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.inventory = ImageInventory(self.docker, self.record_agent)

    async def record_agent(self, body: EventBody) -> Envelope:
        """Append an event to the agent's own stream (``_agent``), durably; its seq is the
        store's last one plus one. The only writer of that stream (the agent actor and the
        service both come here), so there is one owner of its sequence numbers."""
        async with self._agent_stream:
            seq = await self.store.last_seq(AGENT_STREAM) + 1
            env = new_envelope(AGENT_STREAM, seq, body)
            await self.persist(env)
        return env

    async def persist(self, env: Envelope, *, lazy: bool = False) -> None:
        """Append durably, then hand to the outbox and the listeners (loop side). ``lazy``:
        the append may wait a few milliseconds to share a transaction (execution events)."""
        await self.persist_all([env], lazy=lazy)

    async def persist_all(self, envs: list[Envelope], *, lazy: bool = False) -> None:
        """Append several envelopes (of several streams) in one transaction, then announce
        each in order (a warm-pool take: kernlet.actors.pool_take)."""
        await self.store.append(envs, lazy=lazy)
        for env in envs:
            if self.cfg.debug.crash_after is not None:
                self._maybe_crash(env)
            self.outbox.enqueue(env)
            for listener in self.listeners:
                try:
                    listener(env)
                except Exception:
                    log.exception("event listener failed")

    def _maybe_crash(self, env: Envelope) -> None:
        """Fault injection (debug.crash-after): die like SIGKILL once the event is durable."""
        spec = self.cfg.debug.crash_after or ""
        kind, _, nth = spec.partition(":")
        if env.type != kind:
            return
        self._crash_count += 1
        if self._crash_count >= int(nth or 1):
            log.warning("debug.crash-after=%s: exiting abruptly after %s", spec, env.type)
            os._exit(137)
