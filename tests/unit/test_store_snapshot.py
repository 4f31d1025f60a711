"""Snapshots of folded streams: a faithful cache of replay, trusted only from the same fold."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack

from fixtures.bodies import body
from kernlet.events.lifecycle import State, replay
from kernlet.events.types import (
    ExecutionStarted,
    KernelCreating,
    KernelPreparing,
    KernelStarted,
    new_envelope,
)
from kernlet.store import SQLiteEventLog
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
