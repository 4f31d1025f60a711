"""Receiving an agent's events on the manager side (re-exported by :mod:`kernlet.client`)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client

from kernlet.events import unpack

__all__ = ["EventSubscriber"]


class EventSubscriber:
    """Receives an agent's events, handing each over once (duplicates dropped by event id)."""

    def __init__(self, nc: Client, prefix: str = "kernlet", agent_id: str = "*",
                 remember: int = 100_000) -> None:
        self._nc = nc
        self.subject = f"{prefix}.events.{agent_id}.>"
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.duplicates = 0
        self._sub: Any = None

    async def start(self) -> EventSubscriber:
        async def on_msg(msg: Any) -> None:
            event = unpack(msg.data, max_size=64 * 1024 * 1024)
            if not isinstance(event, dict) or "id" not in event:
                return
            if event["id"] in self._seen:
                self.duplicates += 1
                return
            self._seen[event["id"]] = None
            if len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            await self._queue.put(event)

        self._sub = await self._nc.subscribe(self.subject, cb=on_msg)
        return self

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def until(self, pred: Callable[[dict[str, Any]], bool],
                    timeout: float = 30.0) -> dict[str, Any]:
        """Events are consumed until one matches ``pred``; that one is returned."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.next(max(0.01, deadline - loop.time()))
            if pred(event):
                return event

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
