"""Manager-side event subscription: an agent's events, each handed over once.

Delivery is at least once (the agent re-publishes what JetStream did not acknowledge), so
:class:`EventSubscriber` drops duplicates by event id. It reads plain NATS, or, with
``jetstream=True``, an ephemeral ordered consumer of the event stream (``nats.stream-name``)
that starts at new messages, or at those stored since ``since`` (epoch s): what the stream
stored is what the subscriber sees, even while the agent re-publishes after a reconnect.
The manager then needs ``$JS.API.>`` (or the consumer subjects) in its NATS permissions
(docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api

from kernlet.errors import AgentUnavailable
from kernlet.events import unpack

__all__ = ["EventSubscriber"]


class EventSubscriber:
    """Receives an agent's events, handing each over once (duplicates dropped by event id)."""

    def __init__(self, nc: Client, prefix: str = "kernlet", agent_id: str = "*",
                 remember: int = 100_000, *, jetstream: bool = False,
                 stream: str | None = None, since: float | None = None,
                 kernel_id: str | None = None) -> None:
        """``agent_id = "*"``: every agent's; ``kernel_id``: only that kernel's.
        ``jetstream``: read the event stream ``stream`` (found by subject when None) instead
        of plain NATS, from ``since`` (epoch s; None: new events only)."""
        self._nc = nc
        self.subject = (f"{prefix}.events.{agent_id}.>" if kernel_id is None
                        else f"{prefix}.events.{agent_id}.{kernel_id}.*")
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._queue: asyncio.Queue[tuple[dict[str, Any], int | None]] = asyncio.Queue()
        self.duplicates = 0
        self.jetstream = jetstream
        self.stream = stream
        self.since = since
        #: JetStream: messages of the subject the stream held after the last event handed
        #: over when it was delivered (0: caught up then); None before it, or on plain NATS
        self.pending: int | None = None
        self._sub: Any = None

    async def start(self) -> EventSubscriber:
        async def on_msg(msg: Any) -> None:
            pending = None
            if self.jetstream:
                with contextlib.suppress(Exception):  # a status message has no metadata
                    pending = int(msg.metadata.num_pending)
            event = unpack(msg.data, max_size=64 * 1024 * 1024)
            if not isinstance(event, dict) or "id" not in event:
                return
            if event["id"] in self._seen:
                self.duplicates += 1
                return
            self._seen[event["id"]] = None
            if len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            await self._queue.put((event, pending))

        if not self.jetstream:
            self._sub = await self._nc.subscribe(self.subject, cb=on_msg)
            return self
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW)
        if self.since is not None:
            config = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_TIME,
                opt_start_time=datetime.fromtimestamp(self.since, UTC))
        try:
            self._sub = await self._nc.jetstream().subscribe(
                self.subject, cb=on_msg, stream=self.stream, ordered_consumer=True,
                config=config)
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise AgentUnavailable(
                f"cannot read the event stream for {self.subject}: {exc or type(exc).__name__}"
            ) from exc
        return self

    async def next(self, timeout: float | None = 10.0) -> dict[str, Any]:
        """The next new event; None ``timeout`` waits for ever."""
        event, self.pending = await asyncio.wait_for(self._queue.get(), timeout)
        return event

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
