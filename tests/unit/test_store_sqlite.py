"""What only the SQLite log has: pragmas, schema version, old payloads on disk, the fallback."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from kernlet.events import codec
from kernlet.events.lifecycle import IllegalTransition, State
from kernlet.events.types import ContainerCreated, KernelPreparing, KernelTerminated, new_envelope
from kernlet.store import (
    SCHEMA_VERSION,
    DuplicateEvent,
    SchemaTooNew,
    SequenceConflict,
    SQLiteEventLog,
    StoreError,
)
from kernlet.store.schema import configure

FIXTURES = Path(__file__).parents[1] / "fixtures"


def prep(kernel_id: str, seq: int = 1) -> Any:
    return new_envelope(kernel_id, seq, KernelPreparing(session_id="s", image="i"))


async def test_every_connection_is_wal_with_full_sync_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = create_async_engine(URL.create("sqlite+aiosqlite", database=str(tmp_path / "x.db")))
    configure(engine.sync_engine, busy_timeout_ms=1234)
    try:
        for _ in range(2):
            async with engine.connect() as conn:
                pragmas = [
                    (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                    for name in ("journal_mode", "synchronous", "busy_timeout")
                ]
                assert pragmas == ["wal", 2, 1234]  # synchronous 2 is FULL
    finally:
        await engine.dispose()


async def test_new_file_gets_the_schema_version(tmp_path: Path) -> None:
    log = SQLiteEventLog(tmp_path / "events.db")
    await log.open()
    await log.close()
    with sqlite3.connect(tmp_path / "events.db") as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert row == (str(SCHEMA_VERSION),)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION + 1),))
    log = SQLiteEventLog(path)
    with pytest.raises(SchemaTooNew, match="newer than this kernlet supports"):
        await log.open()
    with sqlite3.connect(path) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert tables == {"meta", "sqlite_autoindex_meta_1"}
    with pytest.raises(StoreError):
        await log.read_stream("k")  # not open


async def test_a_file_that_is_not_sqlite_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(StoreError):
        await SQLiteEventLog(path).open()


async def test_database_refusals_are_translated_from_the_sqlalchemy_error(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    a, b = SQLiteEventLog(path), SQLiteEventLog(path)
    await a.open()
    await b.open()
    try:
        await a.append([prep("k")])
        await b.append([new_envelope("k", 2, KernelTerminated(reason="r"))])
        # a's cached head of k is stale now: only the primary key can tell
        with pytest.raises(SequenceConflict) as caught:
            await a.append([new_envelope("k", 2, KernelTerminated(reason="again"))])
        assert isinstance(caught.value.__cause__, IntegrityError)
        first = (await a.read_stream("k"))[0]
        with pytest.raises(DuplicateEvent) as dup:
            await a.append([dataclasses.replace(prep("other"), event_id=first.event_id)])
        assert isinstance(dup.value.__cause__, IntegrityError)
        # the stale head was dropped: a reads k's stream again and knows it terminated
        with pytest.raises(IllegalTransition):
            await a.append([new_envelope("k", 3, ContainerCreated(container_id="c"))])
        await a.append([prep("other")])
        assert set(await a.live_kernels()) == {"other"}
        assert await a.count() == 3
    finally:
        await a.close()
        await b.close()


@pytest.fixture
def v0_upgraders() -> Iterator[None]:
    """The upgraders of the fixture's hypothetical version 0, registered for one test."""

    def preparing(p: dict[str, Any]) -> dict[str, Any]:
        return {"session_id": p.pop("session"), "image": p.pop("image_ref"), "config": {}, **p}

    def terminated(p: dict[str, Any]) -> dict[str, Any]:
        p["exit_code"] = p.pop("exit_status")
        return p

    added = {("kernel_preparing", 0): preparing, ("kernel_terminated", 0): terminated}
    assert not added.keys() & codec.UPGRADERS.keys()
    codec.UPGRADERS.update(added)
    try:
        yield
    finally:
        for key in added:
            del codec.UPGRADERS[key]


#: the schema of version 1, frozen here: the fixture is a log of that version
SCHEMA_V1 = """
CREATE TABLE meta (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (kernel_id TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL UNIQUE,
  type TEXT NOT NULL, version INTEGER NOT NULL, time FLOAT NOT NULL, payload BLOB NOT NULL,
  delivered BOOLEAN NOT NULL, position INTEGER NOT NULL UNIQUE, PRIMARY KEY (kernel_id, seq));
CREATE INDEX ix_events_undelivered ON events (position) WHERE delivered = 0;
CREATE TABLE streams (stream_id TEXT NOT NULL PRIMARY KEY, last_seq INTEGER NOT NULL,
  state TEXT, live BOOLEAN NOT NULL, updated_at FLOAT NOT NULL);
CREATE INDEX ix_streams_live ON streams (stream_id) WHERE live = 1;
INSERT INTO meta VALUES ('schema_version', '1');
"""


async def _log_from_fixture(tmp_path: Path) -> SQLiteEventLog:
    """The fixture's schema-1 log, opened (and so migrated) by today's code."""
    fixture = json.loads((FIXTURES / "event_log_v0_events.json").read_text())
    path = tmp_path / "events.db"
    assert fixture["schema_version"] == 1
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_V1)
        for ev in fixture["events"]:
            row = {**ev, "payload": bytes.fromhex(ev.pop("payload_hex"))}
            db.execute(
                "INSERT INTO events VALUES (:kernel_id, :seq, :event_id, :type, :version,"
                " :time, :payload, :delivered, :position)",
                row,
            )
        for st in fixture["streams"]:
            db.execute(
                "INSERT INTO streams VALUES (:stream_id, :last_seq, :state, :live, :updated_at)",
                st,
            )
    log = SQLiteEventLog(path)
    await log.open()
    return log


async def test_a_schema_1_log_is_migrated(tmp_path: Path) -> None:
    log = await _log_from_fixture(tmp_path)
    await log.close()
    with sqlite3.connect(tmp_path / "events.db") as db:
        assert db.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]
        columns = [row[1] for row in db.execute("PRAGMA table_info(streams)")]
        assert columns[-1] == "snapshot"
        assert db.execute("SELECT count(*) FROM streams WHERE snapshot IS NULL").fetchone()[0] > 0


async def test_old_event_versions_are_upgraded_on_read(tmp_path: Path, v0_upgraders: None) -> None:
    log = await _log_from_fixture(tmp_path)
    try:
        done = await log.read_stream("k-old-done")
        assert done[0].body == KernelPreparing(session_id="sess-2", image="python:3.10")
        assert done[1].body == KernelTerminated(reason="user-requested", exit_code=137)
        live = await log.live_kernels()
        assert list(live) == ["k-old-live"]
        state = live["k-old-live"]
        assert (state.state, state.session_id, state.image) == (
            State.CREATING,
            "sess-1",
            "python:3.11",
        )
        assert (state.cpuset, state.ports) == ((0, 1), (30000,))
        assert [e.seq for e in await log.undelivered()] == [2, 2]
        # the writer replays the old stream too, and the stream goes on
        await log.append([new_envelope("k-old-live", 3, ContainerCreated(container_id="c"))])
        assert (await log.live_kernels())["k-old-live"].container_id == "c"
    finally:
        await log.close()


async def test_old_event_version_without_upgrader_is_a_codec_error(tmp_path: Path) -> None:
    log = await _log_from_fixture(tmp_path)
    try:
        with pytest.raises(codec.CodecError, match="no upgrade for kernel_preparing v0"):
            await log.read_stream("k-old-live")
    finally:
        await log.close()


async def test_start_up_and_outbox_queries_use_their_indexes(tmp_path: Path) -> None:
    log = SQLiteEventLog(tmp_path / "events.db")
    await log.open()
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, params))

    assert log._engine is not None
    event.listen(log._engine.sync_engine, "before_cursor_execute", capture)
    try:
        await log.append([prep(f"k{n}") for n in range(3)])
        seen.clear()
        await log.live_kernels()
        await log.undelivered()
        await log.undelivered_count()
    finally:
        await log.close()
    assert len(seen) == 3
    with sqlite3.connect(tmp_path / "events.db") as db:
        for statement, params in seen:
            plan = " / ".join(
                row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}", params)
            )
            scans = [step for step in plan.split(" / ") if step.startswith("SCAN")]
            assert all("USING" in step and "INDEX" in step for step in scans), plan
