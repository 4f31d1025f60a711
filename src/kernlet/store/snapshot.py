"""A stream's folded state kept beside its events, so that start-up reads one row per kernel.

The writer stores, with each stream head it writes, the kernel's state after that append,
encoded here. Start-up (``live_kernels``) decodes these instead of replaying every event of
every live kernel. A snapshot is a cache, never the truth: the events are. It is trusted
only when written by the same fold: each carries ``FOLD_ID``, a digest of the modules that
decide what replay makes of the log (the lifecycle fold, the event types with their versions
and their base, the codec with its upgraders). After any change to them every snapshot is
stale, start-up replays the events as it always could, and a stream's snapshot is renewed by
its next append.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import msgpack

from kernlet.events import base, codec, lifecycle, types
from kernlet.events.lifecycle import KernelState, State

__all__ = ["FOLD_ID", "decode_state", "encode_state"]


def _fold_id() -> str:
    digest = hashlib.sha256()
    for module in (lifecycle, base, types, codec):
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:16]


FOLD_ID = _fold_id()
_FIELDS = tuple(f.name for f in dataclasses.fields(KernelState))
#: fields held as tuples (msgpack gives lists back)
_TUPLES = frozenset(f.name for f in dataclasses.fields(KernelState) if f.default == ())


def encode_state(state: KernelState) -> bytes:
    values = [getattr(state, name) for name in _FIELDS]
    values[_FIELDS.index("state")] = state.state.value
    return msgpack.packb([FOLD_ID, values], use_bin_type=True)  # type: ignore[no-any-return]


def decode_state(blob: bytes | None) -> KernelState | None:
    """The state in ``blob``; None when there is none, or it is stale or unreadable (then
    the caller replays the events)."""
    if not blob:
        return None
    try:
        fold_id, values = msgpack.unpackb(blob, raw=False, strict_map_key=True)
        if fold_id != FOLD_ID or len(values) != len(_FIELDS):
            return None
        fields: dict[str, Any] = dict(zip(_FIELDS, values, strict=True))
        fields["state"] = State(fields["state"])
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    for name in _TUPLES:
        fields[name] = tuple(fields[name])
    return KernelState(**fields)
