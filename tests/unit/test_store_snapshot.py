"""Snapshots of folded streams: a faithful cache of replay, trusted only from the same fold."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack
import pytest

from fixtures.bodies import body
from kernlet.events.lifecycle import State, is_live, replay
from kernlet.events.types import (
    EventBody,
    ExecutionFinished,
    ExecutionStarted,
    KernelCreating,
    KernelPreparing,
    KernelStarted,
    KernelTerminated,
    KernelTerminating,
    new_envelope,
)
from kernlet.store import SQLiteEventLog, fold
from kernlet.store import sqlite as sqlite_store
from kernlet.store.records import Record, to_envelope
from kernlet.store.snapshot import FOLD_ID, decode_state, encode_state


def stream(kernel_id: str) -> list:  # type: ignore[type-arg]
    bodies = [
        KernelPreparing(session_id="s", image="img", config={"cpu": 0.5, "environ": {"A": "1"},
                                                              "mounts": [["r", "p"]]}),
        KernelCreating(slots={"cpu": "0.5"}, cpuset=(0, 1), ports=(30001, 30002),
                       scratch_dir="/x", devices={"cuda.device": {"0": "1"}}),
        body("container_created"),
        KernelStarted(container_id="c", info={"ports": [1, 2]}),
        ExecutionStarted(run_id="r1", mode="batch", timeout=5.0, session=True),
    ]
    return [new_envelope(kernel_id, i + 1, b, now=100.0 + i) for i, b in enumerate(bodies)]


def test_every_state_of_a_stream_round_trips() -> None:
    envs = stream("k")
    for n in range(1, len(envs) + 1):
        state = replay(envs[:n])
        assert state is not None
        assert decode_state(encode_state(state)) == state
    last = decode_state(encode_state(replay(envs)))  # type: ignore[arg-type]
    assert last is not None and last.cpuset == (0, 1) and last.state is State.RUNNING


def test_a_stale_or_broken_snapshot_is_not_trusted() -> None:
    state = replay(stream("k"))
    assert state is not None
    _, values = msgpack.unpackb(encode_state(state))
    assert decode_state(msgpack.packb(["0" * 16, values])) is None  # another fold wrote it
    assert decode_state(msgpack.packb([FOLD_ID, values[:-1]])) is None  # other fields
    assert decode_state(b"\xc1garbage") is None
    assert decode_state(None) is None and decode_state(b"") is None


async def test_start_up_reads_snapshots_and_replays_without_one(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = SQLiteEventLog(path)
    await log.open()
    try:
        await log.append(stream("a"))
        await log.append(stream("b"))
        want = {k: replay(await log.read_stream(k)) for k in ("a", "b")}
    finally:
        await log.close()
    with sqlite3.connect(path) as db:
        # a's events unreadable: only its snapshot can give its state
        db.execute("UPDATE events SET payload = x'c1' WHERE kernel_id = 'a'")
        # b's snapshot stale: its events must be replayed
        db.execute("UPDATE streams SET snapshot = x'c1' WHERE stream_id = 'b'")
    log = SQLiteEventLog(path)
    await log.open()
    try:
        assert await log.live_kernels() == want
    finally:
        await log.close()


def lived(kernel_id: str, runs: int, terminated: bool) -> list:  # type: ignore[type-arg]
    """A stream of ``runs`` finished runs after start-up, then terminated or not."""
    envs = stream(kernel_id)
    done = {"status": "finished", "exit_code": 0}
    bodies: list[EventBody] = [ExecutionFinished(run_id="r1", **done)]  # type: ignore[arg-type]
    for i in range(runs):
        bodies += [ExecutionStarted(run_id=f"x{i}", mode="query"),
                   ExecutionFinished(run_id=f"x{i}", **done)]  # type: ignore[arg-type]
    if terminated:
        bodies += [KernelTerminating(reason="user"), KernelTerminated(reason="user", exit_code=0)]
    return envs + [new_envelope(kernel_id, len(envs) + i + 1, b, now=200.0 + i)
                   for i, b in enumerate(bodies)]


@pytest.mark.parametrize("stale_in", [500, 0])
async def test_the_full_fold_from_snapshots_equals_the_fold_of_every_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stale_in: int
) -> None:
    monkeypatch.setattr(sqlite_store, "_STALE_IN", stale_in)  # by id / by one scan
    path = tmp_path / "events.db"
    log = SQLiteEventLog(path)
    await log.open()
    try:
        for i in range(12):
            envs = lived(f"k{i:02d}", runs=i, terminated=i % 3 == 0)
            await log.append(envs[: len(envs) // 2])
            await log.append(envs[len(envs) // 2 :])  # snapshot renewed by the last append
        await log.append([new_envelope("_agent", 1, body("agent_started"))])
    finally:
        await log.close()
    old = encode_state(replay(lived("k05", 5, False)[:-1]))  # type: ignore[arg-type]
    with sqlite3.connect(path) as db:
        db.execute("UPDATE streams SET snapshot = NULL WHERE stream_id = 'k01'")  # schema 1
        db.execute("UPDATE streams SET snapshot = x'c1' WHERE stream_id = 'k02'")  # broken
        stale = msgpack.packb(["0" * 16, msgpack.unpackb(old)[1]])
        db.execute("UPDATE streams SET snapshot = ? WHERE stream_id = 'k03'", (stale,))
        # of this fold but one event behind its stream: not the stream's state
        db.execute("UPDATE streams SET snapshot = ? WHERE stream_id = 'k05'", (old,))
        rows = db.execute("SELECT kernel_id, seq, event_id, type, version, time, payload "
                          "FROM events ORDER BY position").fetchall()
    plain = fold(to_envelope(Record(*row)) for row in rows)
    assert len(plain) == 12 and plain["k05"].executions == 6
    log = SQLiteEventLog(path)
    await log.open()
    try:
        assert await log.all_kernels() == plain
        assert list(await log.all_kernels()) == sorted(plain)
        assert await log.live_kernels() == {k: s for k, s in plain.items() if is_live(s)}
    finally:
        await log.close()
