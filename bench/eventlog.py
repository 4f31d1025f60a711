"""Event-log figures, in this process: durable appends under concurrency, and replay.

- appends: 8 "kernels" append single events (execution_started / execution_finished pairs,
  the commonest events of a running kernel) as fast as they can, each awaiting its append, all
  through one :class:`~kernlet.store.SQLiteEventLog` (group commit). Floor: plain ``sqlite3``
  inserting the same rows one per transaction, WAL with ``synchronous=FULL``, no Python
  between them. Beside it, the bound on the ratio: kernlet's own transaction shape (one row
  and one stream head for each writer per commit, the snapshot in each head, in a file of
  kernlet's schema) run by plain ``sqlite3`` with every parameter made beforehand.
- replay: a log of N events over N/100 kernels (a fifth of them live, the rest terminated) is
  opened by a fresh log object: (a) ``open()`` + ``live_kernels()``, what an agent does at
  start; (b) ``open()`` + every stream read through the public API and folded. Floor: plain
  ``sqlite3`` selecting the same rows and unpacking their msgpack payloads.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack

from kernlet.events import (
    ContainerCreated,
    Envelope,
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
from kernlet.events.lifecycle import KernelState, apply
from kernlet.store import SQLiteEventLog
from kernlet.store.batch import StreamHead
from kernlet.store.records import to_record
from kernlet.store.schema import (
    INSERT_EVENTS_SQL,
    UPSERT_STREAM_SQL,
    event_params,
    stream_params,
)

__all__ = ["AppendResult", "ReplayResult", "bench_appends", "bench_replay"]


def _lifecycle_start(kernel_id: str) -> list[EventBody]:
    return [
        KernelPreparing(session_id=kernel_id, image="kernlet/python:3.11",
                        config={"image": "kernlet/python:3.11", "cpu": None, "mem": None,
                                "environ": {}, "bootstrap": ""}),
        KernelCreating(slots={"cpu": "1.0", "mem": "536870912"},
                       scratch_dir=f"/var/lib/kernlet/scratch/{kernel_id}"),
        ContainerCreated(container_id=uuid.uuid4().hex * 2),
        KernelStarted(container_id=uuid.uuid4().hex * 2,
                      info={"id": kernel_id, "host": "127.0.0.1", "service_ports": [],
                            "resource_spec": {"cpu": "1.0", "mem": "536870912"}}),
    ]


def _runs(n_pairs: int) -> Iterator[EventBody]:
    for _ in range(n_pairs):
        run_id = uuid.uuid4().hex
        yield ExecutionStarted(run_id=run_id, mode="query")
        yield ExecutionFinished(run_id=run_id, status="finished", exit_code=0)


@dataclass(frozen=True)
class AppendResult:
    appends: int
    kernlet_per_s: float
    baseline_per_s: float
    commits: int
    #: the same rows in kernlet's transactions (one row per writer a commit), plain sqlite3
    shape_per_s: float


async def bench_appends(root: Path, writers: int = 8, per_writer: int = 1000) -> AppendResult:
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    log = SQLiteEventLog(root / "appends.sqlite")
    await log.open()
    try:
        kids = [f"k{i:02d}-{uuid.uuid4().hex[:8]}" for i in range(writers)]
        for kid in kids:
            await log.append([new_envelope(kid, i + 1, b)
                              for i, b in enumerate(_lifecycle_start(kid))])
        bodies = {kid: list(_runs(per_writer // 2)) for kid in kids}
        start_commits = log.commits

        async def writer(kid: str) -> None:
            seq = 4
            for body in bodies[kid]:
                seq += 1
                await log.append([new_envelope(kid, seq, body)])

        t0 = time.perf_counter()
        await asyncio.gather(*(writer(k) for k in kids))
        elapsed = time.perf_counter() - t0
        commits = log.commits - start_commits
    finally:
        await log.close()
    n = writers * (per_writer // 2) * 2
    # the floor: the same rows, one INSERT + COMMIT each
    rows = [to_record(new_envelope(kid, 5 + i, body))
            for kid in kids for i, body in enumerate(bodies[kid])]
    base = await asyncio.to_thread(_sqlite_inserts, root / "baseline.sqlite", rows)
    shape = await _shape_floor(root / "shape.sqlite", kids, bodies)
    return AppendResult(n, n / elapsed, n / base, commits, n / shape)


async def _shape_floor(path: Path, kids: list[str], bodies: dict[str, list[EventBody]]) -> float:
    """Seconds plain sqlite3 takes to commit the bodies in kernlet's transactions: round by
    round, one event of every kernel and its new stream head in each, into a log of kernlet's
    schema that holds the same lifecycle starts. Every parameter is made before the clock."""
    log = SQLiteEventLog(path)
    await log.open()
    try:
        for kid in kids:
            await log.append([new_envelope(kid, i + 1, b)
                              for i, b in enumerate(_lifecycle_start(kid))])
        states = await log.all_kernels()
        position = await log.count() + 1
    finally:
        await log.close()
    return await asyncio.to_thread(_commit_rounds, path, _rounds(kids, bodies, states, position))


Params = tuple[list[tuple[object, ...]], list[tuple[object, ...]]]


def _rounds(kids: list[str], bodies: dict[str, list[EventBody]],
            states: dict[str, KernelState], position: int) -> list[Params]:
    rounds: list[Params] = []
    for i in range(len(bodies[kids[0]])):
        rows, heads = [], []
        for kid in kids:
            env = new_envelope(kid, states[kid].seq + 1, bodies[kid][i])
            states[kid] = apply(states[kid], env)
            rows.append(event_params(to_record(env), position))
            heads.append(stream_params(kid, StreamHead(env.seq, states[kid], env.time)))
            position += 1
        rounds.append((rows, heads))
    return rounds


def _commit_rounds(path: Path, rounds: list[Params]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        t0 = time.perf_counter()
        for rows, heads in rounds:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT_EVENTS_SQL, rows)
            conn.executemany(UPSERT_STREAM_SQL, heads)
            conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        conn.close()


def _sqlite_inserts(path: Path, rows: list) -> float:  # type: ignore[type-arg]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE events (kernel_id TEXT, seq INTEGER, event_id TEXT UNIQUE, "
            "type TEXT, version INTEGER, time REAL, payload BLOB, delivered BOOLEAN, "
            "position INTEGER UNIQUE, PRIMARY KEY (kernel_id, seq))"
        )
        t0 = time.perf_counter()
        for pos, r in enumerate(rows, 1):
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (r.kernel_id, r.seq, r.event_id, r.type, r.version, r.time, r.payload, pos),
            )
            conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        conn.close()


@dataclass(frozen=True)
class ReplayResult:
    events: int
    kernels: int
    live: int
    open_live_s: float
    full_fold_s: float
    base_live_s: float
    base_full_s: float
    build_s: float


def _kernel_stream(kid: str, n: int, live: bool) -> list[Envelope]:
    bodies = _lifecycle_start(kid)
    tail: list[EventBody] = [] if live else [
        KernelTerminating(reason="user-requested"),
        KernelTerminated(reason="user-requested", exit_code=0),
    ]
    bodies += list(_runs((n - len(bodies) - len(tail)) // 2))
    bodies += tail
    return [new_envelope(kid, i + 1, b) for i, b in enumerate(bodies)]


async def build_log(path: Path, events: int, per_kernel: int = 100,
                    live_every: int = 5) -> tuple[int, int, int]:
    """Write a log of about ``events`` events; (events, kernels, live kernels)."""
    log = SQLiteEventLog(path)
    await log.open()
    kernels = max(1, events // per_kernel)
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem:
            kid = f"k{i:06d}"
            await log.append(_kernel_stream(kid, per_kernel, live=i % live_every == 0))

    try:
        await asyncio.gather(*(one(i) for i in range(kernels)))
        total = await log.count()
    finally:
        await log.close()
    return total, kernels, len(range(0, kernels, live_every))


async def bench_replay(root: Path, events: int) -> ReplayResult:
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    path = root / "replay.sqlite"
    t0 = time.perf_counter()
    total, kernels, live = await build_log(path, events)
    build_s = time.perf_counter() - t0

    async def open_live() -> int:
        log = SQLiteEventLog(path)
        await log.open()
        try:
            return len(await log.live_kernels())
        finally:
            await log.close()

    async def full_fold() -> int:
        log = SQLiteEventLog(path)
        await log.open()
        try:
            return len(await log.all_kernels())
        finally:
            await log.close()

    open_live_s, n_live = await _best_of(3, open_live)
    full_fold_s, n_all = await _best_of(3, full_fold)
    if n_live != live or n_all != kernels:
        raise RuntimeError(f"replay found {n_live} live / {n_all} kernels, "
                           f"expected {live} / {kernels}")
    base_live_s = min([await asyncio.to_thread(_sqlite_read, path, True) for _ in range(3)])
    base_full_s = min([await asyncio.to_thread(_sqlite_read, path, False) for _ in range(3)])
    return ReplayResult(total, kernels, live, open_live_s, full_fold_s, base_live_s,
                        base_full_s, build_s)


async def _best_of(n: int, fn: Callable[[], object]) -> tuple[float, int]:
    best, result = float("inf"), 0
    for _ in range(n):
        t0 = time.perf_counter()
        result = await fn()  # type: ignore[misc]
        best = min(best, time.perf_counter() - t0)
    return best, result


def _sqlite_read(path: Path, live_only: bool) -> float:
    t0 = time.perf_counter()
    conn = sqlite3.connect(path)
    try:
        where = ("WHERE kernel_id IN (SELECT stream_id FROM streams WHERE live = 1)"
                 if live_only else "")
        cur = conn.execute(
            f"SELECT kernel_id, seq, event_id, type, version, time, payload FROM events "
            f"{where} ORDER BY kernel_id, seq"
        )
        for row in cur:
            msgpack.unpackb(row[6])
    finally:
        conn.close()
    return time.perf_counter() - t0
