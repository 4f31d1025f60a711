"""The event log: kernlet's source of truth and its outbox.

Construct a log, ``await log.open()`` on kernlet's loop, use it from coroutines on that loop,
``await log.close()`` on the way out. :func:`fold` is replay; see :mod:`kernlet.store.interface`
for the contract and docs/event-log.md for the schema and durability.
"""

from kernlet.store.errors import (
    AppendConflict,
    DuplicateEvent,
    SchemaTooNew,
    SequenceConflict,
    StoreClosed,
    StoreError,
)
from kernlet.store.interface import EventLog, fold
from kernlet.store.memory import MemoryEventLog
from kernlet.store.schema import SCHEMA_VERSION
from kernlet.store.sqlite import SQLiteEventLog

__all__ = [
    "SCHEMA_VERSION",
    "AppendConflict",
    "DuplicateEvent",
    "EventLog",
    "MemoryEventLog",
    "SQLiteEventLog",
    "SchemaTooNew",
    "SequenceConflict",
    "StoreClosed",
    "StoreError",
    "fold",
]
