"""The outbox: every message of a run passes through here on its way to the agent.

It gives each run message a sequence number (``seq``, increasing across the runtime's life),
merges consecutive stream chunks of the same run and type while they wait (up to
:data:`MERGE_LIMIT` characters a message), keeps them while no agent is connected, and
bounds what it keeps: past ``limit`` bytes it drops the oldest droppable data (stream text,
media, html) and puts one stderr note per run in its place. Messages that drive the agent's
state (finished, clean-finished, build-finished, waiting-input) are never dropped.

When the agent acknowledges (``ack`` op), sent messages are also kept until acknowledged and
are sent again, in order, to the next connection: an agent that dies before reading what was
written to its socket loses nothing (it drops the repeats by ``seq``).

Pure bookkeeping, no I/O: the server decides when to take messages and write them.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["DROPPABLE", "MERGE_LIMIT", "STREAMS", "Outbox"]

#: Message types whose text is merged with the previous message of the same run and type.
STREAMS = frozenset({"stdout", "stderr"})
#: Message types that may be dropped when the buffer is full (the jupyter shape's too).
DROPPABLE = frozenset({"stdout", "stderr", "media", "html", "stream", "display_data",
                       "execute_result", "update_display_data"})
#: Largest text (characters) of one stream message, merged or split.
MERGE_LIMIT = 64 * 1024
#: Bytes counted for a message beyond its payload.
_OVERHEAD = 64


def _size(msg: dict[str, Any]) -> int:
    data = msg.get("data")
    if isinstance(data, str):
        return len(data) + _OVERHEAD
    if isinstance(data, dict):
        inner = data.get("data", data.get("text"))
        if isinstance(inner, str):
            return len(inner) + _OVERHEAD
        if isinstance(inner, dict):  # a jupyter-shape MIME bundle
            return sum(len(v) for v in inner.values() if isinstance(v, str)) + _OVERHEAD
    return _OVERHEAD


class _Entry:
    __slots__ = ("droppable", "dropped", "msg", "note", "size")

    def __init__(self, msg: dict[str, Any], size: int, droppable: bool, note: bool = False):
        self.msg = msg
        self.size = size
        self.droppable = droppable
        self.note = note  # a "data was dropped" note: never merged into nor dropped
        self.dropped = 0  # for notes: how many bytes they stand for


class Outbox:
    """Run messages waiting to be sent (``pending``) or sent but not yet acknowledged."""

    def __init__(self, limit: int = 64 * 1024 * 1024) -> None:
        self.limit = limit
        self._pending: deque[_Entry] = deque()
        self._retained: deque[_Entry] = deque()
        self.pending_bytes = 0
        self.retained_bytes = 0
        self.seq = 0
        #: True once the agent has sent an ack: from then on sent messages are retained.
        self.acking = False
        #: Bytes dropped since the runtime started (for status and tests).
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self._pending)

    def push(self, msg: dict[str, Any]) -> None:
        """Queue one run message (it must have ``t`` and ``run_id``); merges stream text."""
        kind = msg["t"]
        data = msg.get("data")
        if kind == "stream" and isinstance(data, dict) and self._merge_stream(msg, data):
            return
        if kind in STREAMS and isinstance(data, str):
            if not data:
                return
            last = self._pending[-1] if self._pending else None
            if (
                last is not None
                and not last.note
                and last.msg["t"] == kind
                and last.msg["run_id"] == msg["run_id"]
                and len(last.msg["data"]) + len(data) <= MERGE_LIMIT
            ):
                last.msg["data"] += data
                last.size += len(data)
                self.pending_bytes += len(data)
                self._enforce_limit()
                return
            if len(data) > MERGE_LIMIT:
                for start in range(0, len(data), MERGE_LIMIT):
                    self._append(dict(msg, data=data[start : start + MERGE_LIMIT]))
                self._enforce_limit()
                return
        self._append(msg)
        self._enforce_limit()

    def _merge_stream(self, msg: dict[str, Any], data: dict[str, Any]) -> bool:
        """A jupyter-shape stream message: its text joins the previous pending one of the
        same run and stream name (True), as a notebook would merge them."""
        last = self._pending[-1] if self._pending else None
        text = data.get("text")
        if (
            last is None
            or last.note
            or last.msg["t"] != "stream"
            or last.msg["run_id"] != msg["run_id"]
            or not isinstance(text, str)
            or last.msg["data"].get("name") != data.get("name")
            or len(last.msg["data"]["text"]) + len(text) > MERGE_LIMIT
        ):
            return False
        last.msg["data"] = dict(last.msg["data"], text=last.msg["data"]["text"] + text)
        last.size += len(text)
        self.pending_bytes += len(text)
        self._enforce_limit()
        return True

    def _append(self, msg: dict[str, Any]) -> None:
        self.seq += 1
        msg["seq"] = self.seq
        entry = _Entry(msg, _size(msg), msg["t"] in DROPPABLE)
        self._pending.append(entry)
        self.pending_bytes += entry.size

    def take(self, max_bytes: int) -> list[dict[str, Any]]:
        """Remove and return pending messages, oldest first, about ``max_bytes`` of them."""
        out: list[dict[str, Any]] = []
        taken = 0
        while self._pending and (not out or taken < max_bytes):
            entry = self._pending.popleft()
            self.pending_bytes -= entry.size
            taken += entry.size
            out.append(entry.msg)
            if self.acking:
                self._retained.append(entry)
                self.retained_bytes += entry.size
        return out

    def ack(self, seq: int) -> None:
        """The agent has processed every message up to ``seq``: forget them."""
        self.acking = True
        while self._retained and self._retained[0].msg["seq"] <= seq:
            entry = self._retained.popleft()
            self.retained_bytes -= entry.size

    def rewind(self) -> None:
        """A new connection: sent but unacknowledged messages go out again, first."""
        while self._retained:
            entry = self._retained.pop()
            self.retained_bytes -= entry.size
            self._pending.appendleft(entry)
            self.pending_bytes += entry.size

    def _enforce_limit(self) -> None:
        if self.pending_bytes + self.retained_bytes <= self.limit:
            return
        # Retained messages were sent at least once: they go first.
        while self._retained and self.pending_bytes + self.retained_bytes > self.limit:
            entry = self._retained.popleft()
            self.retained_bytes -= entry.size
        if self.pending_bytes <= self.limit:
            return
        # Then the oldest droppable pending data, leaving a stderr note per run.
        kept: deque[_Entry] = deque()
        notes: dict[str, _Entry] = {}
        dropped: dict[str, int] = {}
        target = self.limit * 3 // 4  # make room for a while, not one message at a time
        while self._pending:
            entry = self._pending.popleft()
            run_id = entry.msg["run_id"]
            if entry.note:
                notes.setdefault(run_id, entry)
                kept.append(entry)
                continue
            if entry.droppable and self.pending_bytes > target:
                self.pending_bytes -= entry.size
                self.dropped_bytes += entry.size
                dropped[run_id] = dropped.get(run_id, 0) + entry.size
                if run_id not in notes:
                    # The note takes the first dropped message's place and sequence number.
                    note_msg = {"t": "stderr", "run_id": run_id, "seq": entry.msg["seq"]}
                    note = _Entry(note_msg, _OVERHEAD, droppable=False, note=True)
                    notes[run_id] = note
                    kept.append(note)
                    self.pending_bytes += note.size
                continue
            kept.append(entry)
        for run_id, note in notes.items():
            note.dropped += dropped.get(run_id, 0)
            total = note.dropped
            note.msg["data"] = (
                f"\n[kernlet: {total} bytes of output were dropped: "
                "the agent did not read them in time]\n"
            )
        self._pending = kept
