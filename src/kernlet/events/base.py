"""The event format's frame: :class:`EventBody` (the base of every event type), the
:class:`Envelope` each event is stored and sent in, and the agent stream's id.

Re-exported by :mod:`kernlet.events.types` (where the event types themselves are) and
:mod:`kernlet.events`; import from either.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["AGENT_STREAM", "Envelope", "EventBody", "new_envelope", "new_event_id"]

#: Stream id used for agent-wide events (agent_started, agent_error...) in the log.
AGENT_STREAM = "_agent"


@dataclass(frozen=True, slots=True)
class EventBody:
    """Base of every event payload. Subclasses set TYPE and VERSION."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event as stored and sent: who, which position in its stream, when, what."""

    kernel_id: str
    #: position in the kernel's stream, from 1, without gaps
    seq: int
    #: unique id (a UUID in hex, version 7 when made here); consumers drop duplicates by it
    event_id: str
    #: UTC time as seconds since the epoch
    time: float
    body: EventBody

    @property
    def type(self) -> str:
        return self.body.TYPE


_RAND_B = (1 << 62) - 1


def new_event_id() -> str:
    """A fresh event id: a version 7 UUID (RFC 9562) in hex, 32 characters.

    Its first 48 bits are the Unix time in milliseconds and 74 of the rest are random, so ids
    made later sort later: the event log's unique index of them grows at its end (one page
    per commit) where random (version 4) ids touched one page per row.
    """
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | (rand >> 68) << 64
             | 0b10 << 62 | rand & _RAND_B)
    return f"{value:032x}"


def new_envelope(kernel_id: str, seq: int, body: EventBody, now: float | None = None) -> Envelope:
    """Wrap a body in an envelope with a fresh event id and the current UTC time."""
    return Envelope(
        kernel_id=kernel_id,
        seq=seq,
        event_id=new_event_id(),
        time=time.time() if now is None else now,
        body=body,
    )
