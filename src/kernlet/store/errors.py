"""Errors of the event log.

::

    StoreError                  anything the event log refuses or fails to do
    ├── StoreClosed             the log is not open (never opened, or closed)
    ├── SchemaTooNew            the file was written by a newer kernlet; left untouched
    └── AppendConflict          an append that would break the log's order or identity
        ├── SequenceConflict    an envelope's seq is not the next one of its stream
        └── DuplicateEvent      an envelope's event id is already in the log

An append can also fail with :class:`kernlet.events.IllegalTransition` (the lifecycle table
does not allow the event from the kernel's state) and :class:`kernlet.events.CodecError` (a
body that msgpack cannot encode). A failed append writes none of its envelopes.
"""

from __future__ import annotations

__all__ = [
    "AppendConflict",
    "DuplicateEvent",
    "SchemaTooNew",
    "SequenceConflict",
    "StoreClosed",
    "StoreError",
]


class StoreError(Exception):
    """Anything the event log refuses or fails to do."""


class StoreClosed(StoreError):
    """The log is not open: it was never opened, or it was closed."""


class SchemaTooNew(StoreError):
    """The database was written by a newer kernlet; this one leaves it untouched."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"{path}: event log schema version {found} is newer than this kernlet supports "
            f"({supported}); upgrade kernlet or point it at another file"
        )


class AppendConflict(StoreError):
    """An append that would break the log's order or identity; none of it was written."""


class SequenceConflict(AppendConflict):
    """An envelope's seq is not the next one of its stream: taken already, or a gap."""

    def __init__(self, kernel_id: str, seq: int, expected: int | None, detail: str = "") -> None:
        self.kernel_id = kernel_id
        self.seq = seq
        #: the seq the stream expected next, when known
        self.expected = expected
        want = f", expected {expected}" if expected is not None else ""
        more = f" ({detail})" if detail else ""
        super().__init__(f"stream {kernel_id}: seq {seq} conflicts{want}{more}")


class DuplicateEvent(AppendConflict):
    """An envelope's event id is already in the log (or twice in one batch)."""

    def __init__(self, event_id: str, detail: str = "") -> None:
        self.event_id = event_id
        more = f" ({detail})" if detail else ""
        super().__init__(f"event id {event_id} is already in the log{more}")
