"""The SQLite schema of the event log (version 2), and how a connection is set up.

::

    meta     (key TEXT PK, value TEXT)               schema_version = "2"
    events   (kernel_id, seq) PK                     one row per event: the Record, plus
             event_id UNIQUE, type, version, time,   delivered (the outbox flag) and
             payload BLOB, delivered, position       position (global append order)
             index on position WHERE delivered = 0   (the outbox scan)
    streams  (stream_id PK, last_seq, state, live,   one row per stream, updated in the
             updated_at, snapshot BLOB NULL)         transaction that appends to it
             index on stream_id WHERE live = 1       (start-up reads only live kernels)

``streams`` lets start-up read only the streams of live kernels, and its ``snapshot`` (the
kernel's folded state after ``last_seq``, see :mod:`kernlet.store.snapshot`) spares it their
events; ``SUM(last_seq)`` is the number of events, since every stream is gap-free from 1.

Migrations (in :func:`prepare`, in the transaction that opens the log): 1 -> 2 adds
``streams.snapshot`` (NULL: those streams are replayed until their next append).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite as sqlite_dialect
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from kernlet.events.lifecycle import is_live
from kernlet.store.batch import StreamHead
from kernlet.store.errors import DuplicateEvent, SchemaTooNew, SequenceConflict, StoreError
from kernlet.store.records import Record
from kernlet.store.snapshot import encode_state

__all__ = [
    "BEGIN_OPTION",
    "INSERT_EVENTS_SQL",
    "RECORD_COLUMNS",
    "SCHEMA_VERSION",
    "UPSERT_STREAM",
    "UPSERT_STREAM_SQL",
    "configure",
    "event_params",
    "events",
    "meta",
    "metadata",
    "next_position",
    "prepare",
    "stream_params",
    "streams",
    "translated",
]

#: Bump with a migration in :func:`prepare` whenever a table changes.
SCHEMA_VERSION = 2
#: Execution option naming the statement that begins a transaction (None: no transaction).
BEGIN_OPTION = "kernlet_begin"

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("kernel_id", Text, primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("event_id", Text, nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("time", Float, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("delivered", Boolean, nullable=False, default=False),
    Column("position", Integer, nullable=False, unique=True),
    Index("ix_events_undelivered", "position", sqlite_where=text("delivered = 0")),
)

streams = Table(
    "streams",
    metadata,
    Column("stream_id", Text, primary_key=True),
    Column("last_seq", Integer, nullable=False),
    #: lifecycle state name, for people and the watcher; NULL for the agent stream
    Column("state", Text, nullable=True),
    Column("live", Boolean, nullable=False),
    Column("updated_at", Float, nullable=False),
    #: the kernel's folded state, encoded by kernlet.store.snapshot (NULL: replay the events)
    Column("snapshot", LargeBinary, nullable=True),
    Index("ix_streams_live", "stream_id", sqlite_where=text("live = 1")),
)

#: the columns of a Record, in its field order
RECORD_COLUMNS = (
    events.c.kernel_id,
    events.c.seq,
    events.c.event_id,
    events.c.type,
    events.c.version,
    events.c.time,
    events.c.payload,
)


def _upsert_stream() -> Any:
    stmt = sqlite_insert(streams)
    changed = ("last_seq", "state", "live", "updated_at", "snapshot")
    return stmt.on_conflict_do_update(
        index_elements=[streams.c.stream_id], set_={c: stmt.excluded[c] for c in changed}
    )


#: writes a stream's head, whether the stream is new or not (built once: building is slow)
UPSERT_STREAM = _upsert_stream()


def _compiled(stmt: Any, keys: tuple[str, ...]) -> str:
    """``stmt`` as SQLite SQL with one ``?`` per column of ``keys``, in that order."""
    compiled = stmt.compile(dialect=sqlite_dialect(), column_keys=list(keys))
    if tuple(compiled.positiontup or ()) != keys:
        raise AssertionError(f"unexpected parameter order {compiled.positiontup}")
    return str(compiled)


#: the writer's hot path runs these on the DBAPI connection (pysqlite caches the prepared
#: statements): the columns of ``events`` and of ``streams``, in the order of the ``?``s
EVENT_KEYS = tuple(c.name for c in events.c)
STREAM_KEYS = tuple(c.name for c in streams.c)
INSERT_EVENTS_SQL = _compiled(events.insert(), EVENT_KEYS)
UPSERT_STREAM_SQL = _compiled(UPSERT_STREAM, STREAM_KEYS)


def configure(engine: Engine, busy_timeout_ms: int) -> None:
    """Set every new connection up: WAL, synchronous=FULL, busy timeout, explicit BEGIN.

    pysqlite's own transaction handling is turned off (it would break SAVEPOINT); SQLAlchemy's
    "begin" emits the statement named by the connection's BEGIN_OPTION execution option.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            mode = cursor.fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"SQLite refused WAL journal mode (got {mode!r})")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        statement = conn.get_execution_options().get(BEGIN_OPTION, "BEGIN")
        if statement:
            conn.exec_driver_sql(statement)


def prepare(conn: Connection, path: str) -> int:
    """Create the schema in a new database or check the one there; the next free position.

    Raises SchemaTooNew (and changes nothing) for a database of a newer schema.
    """
    fresh = not inspect(conn).has_table("meta")
    if not fresh:
        found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version"))
        version = int(found.scalar_one_or_none() or 0)
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(path, version, SCHEMA_VERSION)
        if version < 1:
            raise StoreError(f"{path}: no migration from event log schema version {version}")
        if version < SCHEMA_VERSION:
            _migrate(conn, version)
    metadata.create_all(conn)  # checks first: on an existing database, restores a lost index
    if fresh:
        conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
    return next_position(conn)


def next_position(conn: Connection) -> int:
    """The next free ``events.position``."""
    last = conn.execute(select(events.c.position).order_by(events.c.position.desc()).limit(1))
    return int(last.scalar_one_or_none() or 0) + 1


def _migrate(conn: Connection, version: int) -> None:
    """Bring a schema of ``version`` (1 or more) up to SCHEMA_VERSION, in the caller's
    transaction."""
    if version < 2:
        conn.exec_driver_sql("ALTER TABLE streams ADD COLUMN snapshot BLOB")
    conn.execute(meta.update().where(meta.c.key == "schema_version")
                 .values(value=str(SCHEMA_VERSION)))


@contextlib.contextmanager
def translated(rec: Record | None = None) -> Iterator[None]:
    """Turn SQLAlchemy errors into the log's own, raised from the original. The one place."""
    try:
        yield
    except IntegrityError as exc:
        if rec is None:
            raise StoreError(f"the database refused a write: {exc.orig}") from exc
        if "event_id" in str(exc.orig):
            raise DuplicateEvent(rec.event_id, str(exc.orig)) from exc
        raise SequenceConflict(rec.kernel_id, rec.seq, None, str(exc.orig)) from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"event log database error: {exc}") from exc


def event_params(rec: Record, position: int) -> tuple[Any, ...]:
    """A new (undelivered) row of ``events`` as the parameters of INSERT_EVENTS_SQL."""
    return (rec.kernel_id, rec.seq, rec.event_id, rec.type, rec.version, rec.time,
            rec.payload, False, position)


def stream_params(stream_id: str, head: StreamHead) -> tuple[Any, ...]:
    """A stream's head as the parameters of UPSERT_STREAM_SQL."""
    state = head.state
    if state is None:
        return (stream_id, head.last_seq, None, False, head.updated_at, None)
    return (stream_id, head.last_seq, state.state.value, is_live(state), head.updated_at,
            encode_state(state))
