"""The one wire codec: every byte format kernlet reads or writes goes through here.

- event log rows and NATS event messages: :func:`encode_event` / :func:`decode_event`
  (msgpack maps with the stable type name and version; old versions upgraded on read);
- NATS requests and replies: :func:`pack` / :func:`unpack` (msgpack, size-capped);
- runtime frames between the agent and the in-container runtime: :func:`frame` and
  :class:`FrameReader` (4-byte big-endian length, then one msgpack map).

This module imports only the standard library and msgpack, because the in-container runtime
imports it too.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from kernlet.events import types as t

__all__ = [
    "EVENT_TYPES",
    "MAX_FRAME",
    "MAX_PAYLOAD",
    "CodecError",
    "FrameReader",
    "FrameTooLarge",
    "body_from_payload",
    "body_to_payload",
    "decode_event",
    "encode_event",
    "event_from_dict",
    "event_to_dict",
    "frame",
    "pack",
    "unpack",
]

#: Largest NATS request or reply body kernlet accepts (bytes).
MAX_PAYLOAD = 1024 * 1024
#: Largest runtime frame (bytes); output is chunked far below this.
MAX_FRAME = 16 * 1024 * 1024

_HEADER = struct.Struct(">I")


class CodecError(ValueError):
    """Bytes that are not a valid kernlet message."""


EVENT_TYPES: dict[str, type[t.EventBody]] = {
    cls.TYPE: cls
    for cls in (
        t.KernelPreparing,
        t.KernelPulling,
        t.KernelCreating,
        t.ContainerCreated,
        t.KernelStarted,
        t.KernelRestarting,
        t.KernelTerminating,
        t.KernelTerminated,
        t.KernelHandedOver,
        t.KernelActorRestarted,
        t.ExecutionStarted,
        t.ExecutionFinished,
        t.AgentStarted,
        t.AgentTerminated,
        t.AgentError,
        t.OrphanRemoved,
        t.NetworkCreated,
        t.NetworkRemoved,
        t.ExecutionTimeout,
        t.SessionSuccess,
        t.SessionFailure,
        t.ImagePullProgress,
        t.ImagePulled,
        t.ImageCommitStarted,
        t.ImageCommitFinished,
        t.ImagePushProgress,
        t.ImagePushed,
        t.ImagesPurged,
        t.ImageInventoryChanged,
    )
}

#: (type name, stored version) -> function turning that version's payload into the next one's.
Upgrader = Callable[[dict[str, Any]], dict[str, Any]]
UPGRADERS: dict[tuple[str, int], Upgrader] = {
    # v2 of kernel_creating records the device map of slots like cuda.shares
    ("kernel_creating", 1): lambda p: {**p, "devices": {}},
    # v2 of execution_started records the run's time limit and whether it is a batch job
    ("execution_started", 1): lambda p: {**p, "timeout": None, "session": False},
    # v2 of image_pulled names the error's type (a v1 failure was a Docker error)
    ("image_pulled", 1): lambda p: {**p, "error_type": "" if p.get("ok") else "DockerError"},
}


def pack(obj: Any) -> bytes:
    """msgpack-encode plain data (dicts, lists, str, bytes, numbers, None)."""
    try:
        return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode: {exc}") from exc


def unpack(data: bytes, max_size: int = MAX_PAYLOAD) -> Any:
    """Decode one msgpack value, refusing oversized or malformed input with CodecError."""
    if len(data) > max_size:
        raise CodecError(f"payload of {len(data)} bytes exceeds the limit of {max_size} bytes")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise CodecError(f"malformed msgpack: {exc}") from exc


def body_to_payload(body: t.EventBody) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(body):
        value = getattr(body, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


_FIELDS: dict[type[t.EventBody], tuple[tuple[str, bool], ...]] = {}


def _decoded_fields(cls: type[t.EventBody]) -> tuple[tuple[str, bool], ...]:
    """(name, is a tuple) per field of an event type: replay decodes every event, and
    ``dataclasses.fields`` per call was a fifth of that (see docs/performance.md)."""
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = tuple(
            (f.name, "tuple" in str(f.type)) for f in dataclasses.fields(cls))
    return found


def body_from_payload(type_name: str, version: int, payload: dict[str, Any]) -> t.EventBody:
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise CodecError(f"unknown event type {type_name!r}")
    while version < cls.VERSION:
        upgrade = UPGRADERS.get((type_name, version))
        if upgrade is None:
            raise CodecError(f"no upgrade for {type_name} v{version}")
        payload = upgrade(dict(payload))
        version += 1
    if version > cls.VERSION:
        raise CodecError(f"{type_name} v{version} is newer than this agent knows (v{cls.VERSION})")
    kwargs: dict[str, Any] = {}
    for name, is_tuple in _decoded_fields(cls):
        if name in payload:
            value = payload[name]
            if is_tuple and isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise CodecError(f"bad payload for {type_name}: {exc}") from exc


def event_to_dict(env: t.Envelope) -> dict[str, Any]:
    """The envelope as plain data: the shape of NATS event messages."""
    return {
        "id": env.event_id,
        "kernel_id": env.kernel_id,
        "seq": env.seq,
        "time": env.time,
        "type": env.type,
        "version": env.body.VERSION,
        "payload": body_to_payload(env.body),
    }


def event_from_dict(d: dict[str, Any]) -> t.Envelope:
    try:
        body = body_from_payload(str(d["type"]), int(d["version"]), dict(d["payload"]))
        return t.Envelope(
            kernel_id=str(d["kernel_id"]),
            seq=int(d["seq"]),
            event_id=str(d["id"]),
            time=float(d["time"]),
            body=body,
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(inf): OverflowError
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"bad event record: {exc!r}") from exc


def encode_event(env: t.Envelope) -> bytes:
    return pack(event_to_dict(env))


def decode_event(data: bytes) -> t.Envelope:
    d = unpack(data, max_size=MAX_FRAME)
    if not isinstance(d, dict):
        raise CodecError("an event must be a map")
    return event_from_dict(d)


def frame(msg: dict[str, Any]) -> bytes:
    """One runtime frame: length prefix and a msgpack map."""
    body = pack(msg)
    if len(body) > MAX_FRAME:
        raise CodecError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


class FrameTooLarge(CodecError):
    """A length prefix over MAX_FRAME: the stream cannot be resynchronised."""


class FrameReader:
    """Incremental decoder of runtime frames (both ends of the runtime socket use it)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Feed bytes, get the complete messages; the first bad frame raises CodecError."""
        out: list[dict[str, Any]] = []
        for item in self.items(data):
            if isinstance(item, CodecError):
                raise item
            out.append(item)
        return out

    def items(self, data: bytes) -> Iterator[dict[str, Any] | CodecError]:
        """Feed bytes; each complete frame as its message, or as the CodecError of a frame
        that does not decode (the stream goes on after it). A length over MAX_FRAME raises
        FrameTooLarge."""
        self._buf += data
        while len(self._buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf)
            if size > MAX_FRAME:
                raise FrameTooLarge(f"frame of {size} bytes exceeds {MAX_FRAME}")
            end = _HEADER.size + size
            if len(self._buf) < end:
                return
            body = bytes(self._buf[_HEADER.size : end])
            del self._buf[:end]  # drop the frame first: a bad one must not jam the stream
            try:
                msg = unpack(body, max_size=MAX_FRAME)
            except CodecError as exc:
                yield exc
                continue
            yield msg if isinstance(msg, dict) else CodecError("a frame must hold a map")
