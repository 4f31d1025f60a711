"""Runs of a kernel re-adopted after an agent restart, while executes already arrive.

The agent serves a re-adopted kernel before its recovery has reconnected to the runtime.
Found by ``kernlet bench`` (recovery of 100 kernels): a ``pass`` sent in that window came back
``finished`` with no exit code, closed as lost by the recovery's settle although the runtime
ran it. The runtime is faked by a unix-socket server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kernlet.actors.runs import RunBook
from kernlet.drivers.runtime import RuntimeChannel
from kernlet.events.codec import FrameReader, frame


class FakeRuntime:
    """Says ``busy: None`` (the adopted run ended while no agent listened); ends each
    executed run with exit code 0 once ``release`` is set."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.release = asyncio.Event()
        self.connections = 0
        self.executed: list[str] = []
        self.seq = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        frames = FrameReader()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1 << 16):
                for msg in frames.feed(data):
                    if msg.get("op") == "status":
                        writer.write(frame({"t": "status", "req": msg.get("req"),
                                            "data": {"ready": True, "busy": None}}))
                    elif msg.get("op") == "execute":
                        self.executed.append(msg["run_id"])
                        task = asyncio.create_task(self._finish(msg["run_id"], writer))
                        self._tasks.add(task)

    async def _finish(self, run_id: str, writer: asyncio.StreamWriter) -> None:
        await self.release.wait()
        self.seq += 1
        writer.write(frame({"t": "finished", "run_id": run_id, "seq": self.seq,
                            "data": {"exitCode": 0}}))


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[FakeRuntime]:
    fake = FakeRuntime(tmp_path / "rt.sock")
    server = await asyncio.start_unix_server(fake._serve, str(fake.path))
    yield fake
    for task in fake._tasks:
        task.cancel()
    server.close()


def _book(runtime: FakeRuntime, ended: list[tuple[str, str, int | None]]) -> RunBook:
    return RunBook(runtime.path, lambda run, status, code: ended.append((run, status, code)),
                   lambda: None)


async def _execute(book: RunBook, run_id: str) -> dict[str, Any]:
    res = await book.execute(run_id, "query", "pass", {}, flush_timeout=None, sink=None)
    return res.to_wire()


async def test_a_run_started_during_recovery_is_not_closed_by_its_settle(
    runtime: FakeRuntime,
) -> None:
    ended: list[tuple[str, str, int | None]] = []
    book = _book(runtime, ended)
    try:
        run = asyncio.create_task(_execute(book, "new"))  # sent while recovery connects
        status = await book.connect(5.0)
        while "new" not in runtime.executed:
            await asyncio.sleep(0.01)
        book.settle_adopted(status.get("busy"))  # the runtime had not said busy yet
        runtime.release.set()
        res = await asyncio.wait_for(run, 5.0)
    finally:
        await book.channel.close()
    assert res["status"] == "finished" and res["exitCode"] == 0
    assert ended == [("new", "finished", 0)]


async def test_an_adopted_run_that_ended_unseen_is_lost_and_the_next_one_runs(
    runtime: FakeRuntime,
) -> None:
    ended: list[tuple[str, str, int | None]] = []
    book = _book(runtime, ended)
    try:
        book.adopt("old", "query")
        status = await book.connect(5.0)
        run = asyncio.create_task(_execute(book, "new"))  # waits for "old" to end
        await asyncio.sleep(0.05)
        book.settle_adopted(status.get("busy"))
        runtime.release.set()
        res = await asyncio.wait_for(run, 5.0)
    finally:
        await book.channel.close()
    assert res["exitCode"] == 0
    assert ended == [("old", "lost", None), ("new", "finished", 0)]
    assert runtime.executed == ["new"]


async def test_callers_that_need_a_connection_at_once_share_one(runtime: FakeRuntime) -> None:
    # The runtime keeps only its newest connection: a second one would cut the first.
    channel = RuntimeChannel(runtime.path, lambda _msg: None, lambda: None)
    try:
        await asyncio.gather(*(channel.connect(5.0) for _ in range(4)))
    finally:
        await channel.close()
    assert runtime.connections == 1
