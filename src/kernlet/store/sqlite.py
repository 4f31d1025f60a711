"""The event log in a SQLite file: SQLAlchemy 2 Core, aiosqlite for readers.

Durability: every connection runs in WAL mode with ``synchronous=FULL``, so a transaction is
on disk (fsynced) when its COMMIT returns. Appends go through one writer thread
(:mod:`kernlet.store.thread_commit`: one hand-off each way per group): every
request waiting when a transaction starts joins it, so N concurrent appends cost one fsync.
The writer's connection is a plain (sync) SQLAlchemy connection owned by that thread, and a
whole batch (heads, validation, INSERTs, COMMIT) runs there in **one hop** from the loop:
through aiosqlite every statement was a hand-off between the loop and its thread, about 20
per transaction, each a wait for the scheduler on a busy box. Readers use pooled aiosqlite
connections and see the last committed
state (WAL lets them run beside the writer).

A batch is validated against the cached stream heads, then written in one go (BEGIN
IMMEDIATE, two multi-row INSERTs, COMMIT). Should the database still refuse it (an event id
already in the log, or a file changed behind this object's back), the transaction is rolled
back and the batch written again in a new one, each request in its own SAVEPOINT, row by row,
so only the offending requests fail, with errors raised from the SQLAlchemy error.

One SQLiteEventLog per file: the writer caches the head of every stream it wrote to (touched
only on the writer's thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, false, func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from kernlet.events.lifecycle import IllegalTransition, KernelState, is_live, replay
from kernlet.events.types import AGENT_STREAM, Envelope
from kernlet.store.batch import (
    Append,
    MarkDelivered,
    Request,
    Staging,
    StreamHead,
    WriteFront,
    stage_all,
)
from kernlet.store.errors import AppendConflict, SequenceConflict, StoreClosed
from kernlet.store.interface import fold
from kernlet.store.records import Record, to_envelope
from kernlet.store.schema import (
    BEGIN_OPTION,
    INSERT_EVENTS_SQL,
    RECORD_COLUMNS,
    UPSERT_STREAM_SQL,
    configure,
    event_params,
    events,
    next_position,
    prepare,
    stream_params,
    streams,
    translated,
)
from kernlet.store.snapshot import decode_state
from kernlet.store.thread_commit import ThreadCommitter

__all__ = ["SQLiteEventLog"]

_MARK_CHUNK = 500
#: up to this many streams to replay are read by id; more, by one scan of the events
_STALE_IN = 500


class SQLiteEventLog(WriteFront):
    """An :class:`~kernlet.store.interface.EventLog` in a SQLite file (created if missing)."""

    _writer: ThreadCommitter

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000, max_batch: int = 1024
    ) -> None:
        self.path = os.fspath(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._engine: AsyncEngine | None = None
        #: the writer's engine and connection: only ever used on ``_thread``
        self._wengine: Engine | None = None
        self._wconn: Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._writer = ThreadCommitter(self._commit_batch, max_batch)
        #: the writer's cache of stream heads (committed); terminated kernels are dropped
        self._heads: dict[str, StreamHead] = {}
        self._next_position = 1

    async def open(self) -> None:
        if self._engine is not None:
            return
        engine = create_async_engine(URL.create("sqlite+aiosqlite", database=self.path))
        configure(engine.sync_engine, self._busy_timeout_ms)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="eventlog-writer")
        try:
            await self._on_writer(self._open_writer)
        except BaseException:
            await self._on_writer(self._close_writer)
            self._thread.shutdown()
            self._thread = None
            await engine.dispose()
            raise
        self._engine, self._heads = engine, {}
        self._writer.start(self._thread)

    async def close(self) -> None:
        if self._engine is None:
            return
        engine = self._engine
        try:
            await self._writer.stop()
        finally:
            self._engine = None
            try:
                await self._on_writer(self._close_writer)
            finally:
                assert self._thread is not None
                self._thread.shutdown()
                self._thread = None
                with translated():
                    await engine.dispose()

    async def _on_writer(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the writer's thread: the one hop of a transaction."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _open_writer(self) -> None:
        engine = create_engine(URL.create("sqlite", database=self.path))
        configure(engine, self._busy_timeout_ms)
        conn: Connection | None = None
        try:
            with translated():
                conn = engine.connect().execution_options(**{BEGIN_OPTION: "BEGIN IMMEDIATE"})
                with conn.begin():
                    self._next_position = prepare(conn, self.path)
        except BaseException:
            if conn is not None:
                conn.close()
            engine.dispose()
            raise
        self._wengine, self._wconn = engine, conn

    def _close_writer(self) -> None:
        engine, conn = self._wengine, self._wconn
        self._wengine = self._wconn = None
        with translated():
            if conn is not None:
                conn.close()
            if engine is not None:
                engine.dispose()

    async def read_stream(self, kernel_id: str, after_seq: int = 0) -> list[Envelope]:
        await self._writer.settle()  # what was appended lazily before this read, too
        query = (
            select(*RECORD_COLUMNS)
            .where(events.c.kernel_id == kernel_id, events.c.seq > after_seq)
            .order_by(events.c.seq)
        )
        return await self._envelopes(query)

    async def kernel_ids(self) -> list[str]:
        query = select(streams.c.stream_id).where(streams.c.stream_id != AGENT_STREAM)
        async with self._reading() as conn:
            return list((await conn.scalars(query.order_by(streams.c.stream_id))).all())

    async def live_kernels(self) -> dict[str, KernelState]:
        """The snapshots of the live streams; the events of those without a usable one."""
        states = await self._folded(streams.c.live)
        return {k: state for k, state in states.items() if is_live(state)}

    async def all_kernels(self) -> dict[str, KernelState]:
        """The full fold: every stream's snapshot where it is usable (written by this fold,
        at the stream's last seq), and the events of the others folded, in one read."""
        return await self._folded(None)

    async def _folded(self, where: Any) -> dict[str, KernelState]:
        """The state of every kernel stream (those matching ``where``), sorted by id: from
        its snapshot when that is of this fold and at the stream's last seq, else replayed
        from its events. Both reads in one read transaction: one committed state."""
        heads = select(streams.c.stream_id, streams.c.last_seq, streams.c.snapshot).where(
            streams.c.stream_id != AGENT_STREAM)
        if where is not None:
            heads = heads.where(where)
        states: dict[str, KernelState] = {}
        stale: list[str] = []
        async with self._reading(transaction=True) as conn:
            for stream_id, last_seq, blob in (await conn.execute(heads)).all():
                state = decode_state(blob)
                if state is None or state.seq != last_seq:
                    stale.append(stream_id)
                else:
                    states[stream_id] = state
            if stale:
                query = select(*RECORD_COLUMNS).order_by(events.c.kernel_id, events.c.seq)
                if len(stale) <= _STALE_IN:
                    query = query.where(events.c.kernel_id.in_(stale))
                else:  # many (after an upgrade): one scan in key order, the others skipped
                    query = query.where(events.c.kernel_id != AGENT_STREAM)
                rows = (await conn.execute(query)).all()
                wanted = set(stale)
                states |= fold(to_envelope(Record(*row)) for row in rows if row[0] in wanted)
        return dict(sorted(states.items()))

    async def last_seq(self, kernel_id: str) -> int:
        query = select(streams.c.last_seq).where(streams.c.stream_id == kernel_id)
        async with self._reading() as conn:
            return int((await conn.scalar(query)) or 0)

    async def undelivered(self, limit: int = 1000) -> list[Envelope]:
        query = (
            select(*RECORD_COLUMNS)
            .where(events.c.delivered == false())
            .order_by(events.c.position)
            .limit(limit)
        )
        return await self._envelopes(query)

    async def count(self) -> int:
        async with self._reading() as conn:
            return int((await conn.scalar(select(func.sum(streams.c.last_seq)))) or 0)

    async def size_bytes(self) -> int:
        """Bytes of the database's pages (those still only in the WAL included)."""
        async with self._reading() as conn:
            pages = await conn.exec_driver_sql("PRAGMA page_count")
            page_size = await conn.exec_driver_sql("PRAGMA page_size")
            return int(pages.scalar_one()) * int(page_size.scalar_one())

    async def undelivered_count(self) -> int:
        query = select(func.count()).select_from(events).where(events.c.delivered == false())
        async with self._reading() as conn:
            return int((await conn.scalar(query)) or 0)

    # -- reading --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._engine is None or not self._writer.running:
            raise StoreClosed(f"the event log {self.path} is not open")

    @contextlib.asynccontextmanager
    async def _reading(self, transaction: bool = False) -> AsyncIterator[AsyncConnection]:
        """A pooled connection in autocommit mode: each query sees the last commit. With
        ``transaction``, in one read transaction: every query sees the same commit."""
        self._check_open()
        assert self._engine is not None
        with translated():
            async with self._engine.connect() as conn:
                if not transaction:
                    yield await conn.execution_options(**{BEGIN_OPTION: None})
                    return
                conn = await conn.execution_options(**{BEGIN_OPTION: "BEGIN"})
                async with conn.begin():
                    yield conn

    async def _envelopes(self, query: Any) -> list[Envelope]:
        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()
        return [to_envelope(Record(*row)) for row in rows]

    # -- writing (only ever on the writer's thread) ---------------------------------------

    def _commit_batch(self, reqs: list[Request]) -> list[BaseException | None]:
        conn = self._wconn
        assert conn is not None
        stale: set[str] = set()
        with translated():
            try:
                with conn.begin():
                    self._load_heads(conn, reqs)
                    staging, outcomes = stage_all(self._heads, reqs)
                    self._write(conn, staging.records, staging.heads, _marks(reqs))
            except IntegrityError:  # rolled back; now find the culprits, one by one
                with conn.begin():
                    # another writer on the file may have taken positions too
                    self._next_position = max(self._next_position, next_position(conn))
                    staging, outcomes = self._write_one_by_one(conn, reqs, stale)
        self._heads.update(staging.heads)
        for stream_id, head in staging.heads.items():
            if head.state is not None and not is_live(head.state):
                stale.add(stream_id)  # final: no append can follow, so no need to keep it
        for stream_id in stale:
            self._heads.pop(stream_id, None)
        return outcomes

    def _write_one_by_one(
        self, conn: Connection, reqs: list[Request], stale: set[str]
    ) -> tuple[Staging, list[BaseException | None]]:
        """The slow path: each request in its own savepoint, row by row, to find the culprit."""
        staging = Staging(self._heads)
        outcomes: list[BaseException | None] = []
        for req in reqs:
            outcome: BaseException | None = None
            try:
                with conn.begin_nested():
                    if isinstance(req, MarkDelivered):
                        self._write(conn, [], {}, req.event_ids)
                    else:
                        heads = staging.check(req)
                        for rec in req.records:
                            with translated(rec):
                                self._write(conn, [rec], {}, ())
                        self._write(conn, [], heads, ())
                        staging.add(req, heads)
            except (AppendConflict, IllegalTransition) as exc:
                outcome = exc
                if isinstance(exc, SequenceConflict) and isinstance(exc.__cause__, IntegrityError):
                    stale.add(exc.kernel_id)  # the database knows better than the cache
            outcomes.append(outcome)
        return staging, outcomes

    def _write(
        self,
        conn: Connection,
        records: Sequence[Record],
        heads: dict[str, StreamHead],
        marks: Sequence[str],
    ) -> None:
        # the hot path: straight to the DBAPI connection, in the transaction SQLAlchemy began
        # (pysqlite reuses the prepared statements); its errors as SQLAlchemy's, for translated
        raw = conn.connection.driver_connection
        assert raw is not None
        try:
            if records:
                first = self._next_position
                raw.executemany(INSERT_EVENTS_SQL, [
                    event_params(rec, pos) for pos, rec in enumerate(records, first)])
                self._next_position = first + len(records)
            if heads:
                raw.executemany(UPSERT_STREAM_SQL, [
                    stream_params(k, head) for k, head in heads.items()])
        except sqlite3.Error as exc:
            raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc
        for start in range(0, len(marks), _MARK_CHUNK):
            chunk = marks[start : start + _MARK_CHUNK]
            mark = update(events).where(events.c.event_id.in_(chunk)).values(delivered=True)
            conn.execute(mark)

    def _load_heads(self, conn: Connection, reqs: list[Request]) -> None:
        """Read the heads of the streams the batch touches that the cache does not hold."""
        wanted = {env.kernel_id for req in reqs if isinstance(req, Append) for env in req.envs}
        missing = sorted(wanted - self._heads.keys())
        if not missing:
            return
        query = select(streams).where(streams.c.stream_id.in_(missing))
        found = {row.stream_id: row for row in conn.execute(query)}
        for stream_id in missing:
            row = found.get(stream_id)
            if row is None:
                self._heads[stream_id] = StreamHead()
                continue
            state = None
            if stream_id != AGENT_STREAM:
                state = decode_state(row.snapshot)
                if state is None or state.seq != row.last_seq:
                    stream = select(*RECORD_COLUMNS).where(events.c.kernel_id == stream_id)
                    rows = conn.execute(stream.order_by(events.c.seq))
                    state = replay(to_envelope(Record(*r)) for r in rows)
            self._heads[stream_id] = StreamHead(row.last_seq, state, row.updated_at)


def _marks(reqs: Sequence[Request]) -> list[str]:
    return [i for req in reqs if isinstance(req, MarkDelivered) for i in req.event_ids]
