"""What the watcher reads from the agent it watches, stated as narrow protocols.

:class:`kernlet.service.AgentService` satisfies :class:`AgentHandle`; unit tests pass fakes.
The watcher reaches the agent actor only by message (``tell`` with a ``Reply``), reads the event
log, and looks at a few figures; it changes nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pykka

from kernlet.actors.loop import LoopThread
from kernlet.config import AgentConfig
from kernlet.events import Envelope
from kernlet.store import EventLog

__all__ = ["AgentHandle", "BusView", "DockerView", "EventSource", "OutboxView"]


class DockerView(Protocol):
    async def ping(self) -> None:
        """Raise when Docker does not answer."""
        ...


class BusView(Protocol):
    @property
    def connected(self) -> bool: ...


class OutboxView(Protocol):
    @property
    def published(self) -> int:
        """Events published to NATS since the agent started."""
        ...

    @property
    def last_error(self) -> str:
        """The last publish error ("" once publishing works again)."""
        ...


class EventSource(Protocol):
    @property
    def listeners(self) -> list[Callable[[Envelope], None]]:
        """Called on the loop with each durable envelope."""
        ...


class AgentHandle(Protocol):
    """One running agent, as the watcher sees it."""

    @property
    def cfg(self) -> AgentConfig: ...

    @property
    def loop(self) -> LoopThread: ...

    @property
    def store(self) -> EventLog: ...

    @property
    def docker(self) -> DockerView: ...

    @property
    def bus(self) -> BusView: ...

    @property
    def outbox(self) -> OutboxView: ...

    @property
    def agent(self) -> pykka.ActorRef[Any] | None:
        """The agent actor; None before it started."""
        ...

    @property
    def ctx(self) -> EventSource | None: ...

    @property
    def started_at(self) -> float:
        """Wall-clock time of the agent's start."""
        ...

    @property
    def last_reconcile(self) -> float | None:
        """Wall-clock time of the last relist of containers; None until one ran."""
        ...

    def stop(self) -> None:
        """Stop the agent, leaving kernels running (from a plain thread; safe twice)."""
        ...
