"""``status`` with ``wait``: the runtime holds the answer until its ipykernel is ready (or
failed, or the wait is up), so the agent's connect asks once instead of every 50 ms.

The runtime's side runs on a :class:`Runtime` whose query engine is never started (its
readiness is set by hand); the agent's side, :meth:`RuntimeChannel.connect`, against a small
unix-socket server that counts what it is asked, with and without support for ``wait``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kernlet.drivers.runtime import STATUS_WAIT, RuntimeChannel
from kernlet.errors import RuntimeUnavailable
from kernlet.events.codec import FrameReader, frame
from kernlet.kernel.server import MAX_STATUS_WAIT, Runtime


class _Conn:
    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []

    def reply(self, msg: dict[str, Any]) -> None:
        self.replies.append(msg)


def _runtime(tmp_path: Path) -> tuple[Runtime, _Conn]:
    return Runtime(str(tmp_path)), _Conn()


async def test_status_without_wait_answers_at_once(tmp_path: Path) -> None:
    rt, conn = _runtime(tmp_path)
    rt.handle(conn, {"op": "status", "req": 1})  # type: ignore[arg-type]
    assert [(m["t"], m["data"]["ready"]) for m in conn.replies] == [("status", False)]


async def test_a_waiting_status_is_answered_when_the_kernel_is_ready(tmp_path: Path) -> None:
    rt, conn = _runtime(tmp_path)
    rt.handle(conn, {"op": "status", "req": 1, "wait": 30})  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert conn.replies == []  # held while the ipykernel starts
    rt.query.ready = True
    rt.query._ready_event.set()
    await asyncio.sleep(0.01)
    assert [(m["t"], m["req"], m["data"]["ready"]) for m in conn.replies] == [
        ("status", 1, True)]


async def test_a_waiting_status_is_answered_when_the_wait_is_up(tmp_path: Path) -> None:
    rt, conn = _runtime(tmp_path)
    rt.handle(conn, {"op": "status", "req": 2, "wait": 0.1})  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    assert [(m["req"], m["data"]["ready"]) for m in conn.replies] == [(2, False)]
    assert conn.replies[0]["data"]["starting"] is not None  # what the probe saw so far


async def test_a_failed_start_answers_a_waiting_status_at_once(tmp_path: Path) -> None:
    rt, conn = _runtime(tmp_path)
    rt.query.error = "the ipykernel did not start: boom"
    rt.handle(conn, {"op": "status", "req": 3, "wait": 30})  # type: ignore[arg-type]
    assert [m["data"]["error"] for m in conn.replies] == ["the ipykernel did not start: boom"]


@pytest.mark.parametrize("wait", [0, -1, MAX_STATUS_WAIT + 1, "1", True, [1]])
async def test_a_bad_wait_is_a_typed_error(tmp_path: Path, wait: object) -> None:
    rt, conn = _runtime(tmp_path)
    rt.handle(conn, {"op": "status", "req": 4, "wait": wait})  # type: ignore[arg-type]
    (reply,) = conn.replies
    assert reply["t"] == "error" and reply["req"] == 4
    assert "wait must be a number of seconds" in reply["data"]["message"]


class _Server:
    """Answers ``status``: not ready until ``ready_after`` seconds; with ``holds``, a request's
    ``wait`` is honoured as the runtime does, else it is ignored (an older runtime)."""

    def __init__(self, ready_after: float, holds: bool) -> None:
        self.ready_after = ready_after
        self.holds = holds
        self.asked: list[dict[str, Any]] = []
        self._ready = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader()
        while data := await reader.read(65536):
            for msg in frames.feed(data):
                self.asked.append(msg)
                if self.holds and msg.get("wait"):
                    try:
                        await asyncio.wait_for(self._ready.wait(), msg["wait"])
                    except TimeoutError:
                        pass
                ready = self._ready.is_set()
                writer.write(frame({"t": "status", "req": msg["req"],
                                    "data": {"ready": ready, "error": None, "starting": None}}))
        writer.close()

    async def become_ready(self) -> None:
        await asyncio.sleep(self.ready_after)
        self._ready.set()


async def _connect(tmp_path: Path, server: _Server, timeout: float = 10) -> dict[str, Any]:
    path = tmp_path / "rt.sock"
    srv = await asyncio.start_unix_server(server, str(path))
    ready = asyncio.create_task(server.become_ready())
    channel = RuntimeChannel(path, lambda _m: None, lambda: None)
    try:
        return await channel.connect(timeout)
    finally:
        await channel.close()
        ready.cancel()
        srv.close()


async def test_connect_asks_once_while_a_runtime_that_holds_it_starts(tmp_path: Path) -> None:
    server = _Server(ready_after=0.4, holds=True)
    assert (await _connect(tmp_path, server))["ready"] is True
    assert len(server.asked) == 1
    assert server.asked[0]["op"] == "status" and 0 < server.asked[0]["wait"] <= STATUS_WAIT


async def test_connect_asks_again_each_wait_until_ready(tmp_path: Path) -> None:
    server = _Server(ready_after=STATUS_WAIT * 1.5, holds=True)
    assert (await _connect(tmp_path, server))["ready"] is True
    assert len(server.asked) == 2


async def test_connect_still_polls_an_older_runtime_that_answers_at_once(tmp_path: Path) -> None:
    server = _Server(ready_after=0.4, holds=False)
    assert (await _connect(tmp_path, server))["ready"] is True
    assert len(server.asked) >= 4  # every 50 ms or so, as before


async def test_the_last_answer_comes_before_the_deadline(tmp_path: Path) -> None:
    """Each wait is at most half of what is left, so the error says what the runtime said."""
    server = _Server(ready_after=60, holds=True)
    with pytest.raises(RuntimeUnavailable, match="the runtime answered, but its ipykernel"):
        await _connect(tmp_path, server, timeout=0.6)
