"""The outbox: events go to NATS after they are durable, and are marked delivered on ack.

Fast path: :meth:`Outbox.enqueue` hands a just-written event to the publisher task. If a
publish fails (NATS down), the outbox falls back to reading undelivered events from the log
until it has caught up, so an event is never lost, only delayed; after a restart the same scan
re-publishes what was written but never acknowledged. Consumers drop duplicates by event id
(JetStream does it too, by message id). Runs on the agent's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from kernlet.drivers.nats import NatsDriver
from kernlet.errors import BusError
from kernlet.events import Envelope, encode_event
from kernlet.protocol import events_subject
from kernlet.store import EventLog

__all__ = ["Outbox"]

log = logging.getLogger(__name__)

#: seconds a "delivered" mark waits, so that the marks of the events published meanwhile share
#: one commit (one mark per event was a commit per event; see docs/performance.md)
MARK_DELAY = 0.05


class Outbox:
    def __init__(self, bus: NatsDriver, store: EventLog, prefix: str, agent_id: str) -> None:
        self._bus = bus
        self._store = store
        self._prefix = prefix
        self._agent_id = agent_id
        self._queue: list[Envelope] = []
        self._wake = asyncio.Event()
        #: True when the log may hold undelivered events that the queue does not
        self._behind = True
        #: event ids published on the fast path, not yet marked delivered
        self._marks: list[str] = []
        self._marking: asyncio.Task[None] | None = None
        self.published = 0
        self.last_error = ""

    def enqueue(self, env: Envelope) -> None:
        """Loop thread only: publish this durable event soon."""
        self._queue.append(env)
        self._wake.set()

    def poke(self) -> None:
        """Re-scan the log (after a reconnect)."""
        self._behind = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if self._behind:
                    await self._catch_up()
                while self._queue:
                    batch, self._queue = self._queue, []
                    await self._publish(batch, defer_marks=True)
                self.last_error = ""
            except BusError as exc:
                self.last_error = str(exc)
                self._queue.clear()
                self._behind = True
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _catch_up(self) -> None:
        self._queue.clear()
        await self._flush_marks(0.0)  # what was published is not read back as undelivered
        while True:
            pending = await self._store.undelivered(500)
            if not pending:
                break
            await self._publish(pending)
        self._behind = False

    async def _publish(self, batch: Sequence[Envelope], defer_marks: bool = False) -> None:
        delivered: list[str] = []
        try:
            for env in batch:
                subject = events_subject(self._prefix, self._agent_id, env.kernel_id, env.type)
                await self._bus.publish_event(subject, encode_event(env), env.event_id)
                delivered.append(env.event_id)
                self.published += 1
        finally:
            if delivered and defer_marks:
                self._marks += delivered
                if self._marking is None or self._marking.done():
                    self._marking = asyncio.create_task(self._flush_marks(MARK_DELAY))
            elif delivered:
                await self._store.mark_delivered(delivered)

    async def _flush_marks(self, delay: float) -> None:
        """Mark the deferred ids delivered. A mark that never lands (the agent died first)
        only means the event is published again after the restart; consumers and JetStream
        drop the repeat by event id."""
        if delay:
            await asyncio.sleep(delay)
        marks, self._marks = self._marks, []
        try:
            await self._store.mark_delivered(marks)
        except Exception as exc:  # noqa: BLE001 - the next start re-publishes them
            log.warning("could not mark %d event(s) delivered: %s", len(marks), exc)
