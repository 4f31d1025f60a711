"""The one record type that storage sees, and its conversion to and from envelopes.

A record is an envelope with its body encoded by the codec: the stable type name, the body's
version, and the payload as msgpack bytes. Records are decoded with
:func:`kernlet.events.codec.body_from_payload`, so payloads of older versions are upgraded on
read; storage never looks inside a payload.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernlet.events.codec import (
    MAX_FRAME,
    CodecError,
    body_from_payload,
    body_to_payload,
    pack,
    unpack,
)
from kernlet.events.types import Envelope

__all__ = ["Record", "to_envelope", "to_record"]


@dataclass(frozen=True, slots=True)
class Record:
    """One stored event: a row of the ``events`` table."""

    #: stream id: the kernel id, or ``_agent`` for agent-wide events
    kernel_id: str
    #: position in the stream, from 1, without gaps
    seq: int
    #: unique id of the event (hex uuid4)
    event_id: str
    #: stable type name of the body (``kernel_started``...)
    type: str
    #: version of the body's payload as it was written
    version: int
    #: UTC seconds since the epoch
    time: float
    #: the body's fields, msgpack-encoded by the codec
    payload: bytes


def to_record(env: Envelope) -> Record:
    """Encode an envelope for storage. Raises CodecError for a body msgpack cannot carry."""
    payload = pack(body_to_payload(env.body))
    if len(payload) > MAX_FRAME:
        raise CodecError(f"event payload of {len(payload)} bytes exceeds {MAX_FRAME}")
    return Record(
        kernel_id=env.kernel_id,
        seq=env.seq,
        event_id=env.event_id,
        type=env.type,
        version=env.body.VERSION,
        time=env.time,
        payload=payload,
    )


def to_envelope(rec: Record) -> Envelope:
    """Decode a stored record, upgrading an old payload version. Raises CodecError."""
    fields = unpack(rec.payload, max_size=MAX_FRAME)
    if not isinstance(fields, dict):
        raise CodecError(f"stored payload of {rec.kernel_id}#{rec.seq} is not a map")
    return Envelope(
        kernel_id=rec.kernel_id,
        seq=rec.seq,
        event_id=rec.event_id,
        time=rec.time,
        body=body_from_payload(rec.type, rec.version, fields),
    )
