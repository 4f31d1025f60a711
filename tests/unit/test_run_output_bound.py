"""A run's output is bounded in the agent: past ``output_limit`` the RuntimeChannel stops
reading the socket (backpressure reaches the runtime) until a caller takes the output; a run
that a later run waits for, or one far past the bound while a reply is awaited, drops its
oldest output with a stderr note saying how much. The runtime is faked by a unix-socket server
that writes a run's script of messages as fast as the socket takes them."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kernlet.actors.runs import RunBook, output_size
from kernlet.config import AgentConfig, ConfigError, load_config
from kernlet.drivers.runtime import READ_LIMIT, READ_SIZE
from kernlet.events.codec import FrameReader, frame

CHUNK = "x" * (64 * 1024)
LIMIT = 1024 * 1024


class FakeRuntime:
    """Answers status and complete; on ``execute`` writes ``scripts[run_id]`` (then
    ``finished``) with sequence numbers, waiting on the socket like the real outbox."""

    def __init__(self, path: Path, scripts: dict[str, list[tuple[str, Any]]]) -> None:
        self.path = path
        self.scripts = scripts
        self.seq = 0
        self.written: dict[str, int] = {}  # run_id -> messages written to the socket
        self.acked = 0
        self.server: asyncio.AbstractServer | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FakeRuntime:
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1 << 16):
                for msg in frames.feed(data):
                    self._handle(msg, writer)

    def _handle(self, msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        op, req = msg.get("op"), msg.get("req")
        if op == "status":
            writer.write(frame({"t": "status", "req": req, "data": {"ready": True}}))
        elif op == "ack":
            self.acked = int(msg["seq"])
        elif op == "complete":
            writer.write(frame({"t": "completion", "req": req, "data": {"matches": ["x"]}}))
        elif op == "execute":
            task = asyncio.create_task(self._play(msg["run_id"], writer))
            self.tasks.add(task)

    async def _play(self, run_id: str, writer: asyncio.StreamWriter) -> None:
        self.written[run_id] = 0
        for kind, data in [*self.scripts[run_id], ("finished", {"exitCode": 0})]:
            self.seq += 1
            writer.write(frame({"t": kind, "run_id": run_id, "seq": self.seq, "data": data}))
            await writer.drain()
            self.written[run_id] += 1


class Book(RunBook):
    """Records the most output the agent held for one run at any moment."""

    peak = 0

    def _on_message(self, msg: dict[str, Any]) -> None:
        super()._on_message(msg)
        run = self._runs.get(str(msg.get("run_id")))
        if run is not None:
            self.peak = max(self.peak, run.buffered)


async def until(pred: Any, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"not reached: {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "rt.sock"


@contextlib.asynccontextmanager
async def book_on(sock: Path, scripts: dict[str, list[tuple[str, Any]]],
                  limit: int = LIMIT) -> AsyncIterator[tuple[Book, FakeRuntime]]:
    async with FakeRuntime(sock, scripts) as fake:
        book = Book(sock, on_finished=lambda *_: None, on_lost=lambda: None, output_limit=limit)
        await book.connect(timeout=10.0)
        try:
            yield book, fake
        finally:
            await book.close("test over")


def text_of(items: list[list[Any]]) -> str:
    return "".join(data for kind, data in items if kind == "stdout")


async def test_a_slow_sink_holds_back_the_runtime_and_loses_nothing(sock: Path) -> None:
    total = 32 * 1024 * 1024
    script = [("stdout", CHUNK)] * (total // len(CHUNK))
    async with book_on(sock, {"r": script}) as (book, fake):
        got: list[list[Any]] = []
        free = asyncio.Event()

        async def sink(items: list[list[Any]]) -> None:
            got.extend(items)
            await free.wait()  # a reader that does not read

        run = asyncio.create_task(book.execute("r", "query", "", {}, None, sink))
        await until(lambda: book.channel.paused, "the channel pauses past the bound")
        await asyncio.sleep(0.3)  # let it try: nothing more may be read
        held = book.peak
        acked_bytes = fake.acked * len(CHUNK)
        assert fake.written["r"] < len(script)  # the runtime is blocked on the socket
        # the agent took at most the bound, one sink batch and one read (plus framing)
        assert held <= LIMIT + READ_SIZE + 2 * READ_LIMIT + len(CHUNK) + 4096
        assert acked_bytes <= LIMIT + 2 * (READ_SIZE + 2 * READ_LIMIT) + 2 * len(CHUNK)
        free.set()
        result = await asyncio.wait_for(run, 60)
    assert result.status == "finished"
    got += result.console
    assert text_of(got) == CHUNK * len(script)  # all of it, in order, no note
    assert all(kind == "stdout" for kind, _ in got)
    assert book.peak <= LIMIT + READ_SIZE + 2 * READ_LIMIT + len(CHUNK) + 4096


async def test_a_sink_gets_batches_of_bounded_size(sock: Path) -> None:
    script = [("stdout", CHUNK)] * 64
    async with book_on(sock, {"r": script}) as (book, _fake):
        sizes: list[int] = []

        async def sink(items: list[list[Any]]) -> None:
            sizes.append(sum(output_size(k, d) for k, d in items))
            await asyncio.sleep(0.01)

        result = await book.execute("r", "query", "", {}, None, sink)
    assert result.status == "finished"
    assert result.console == []  # everything went to the sink
    assert sum(sizes) == sum(output_size(k, d) for k, d in script)
    assert max(sizes) <= 256 * 1024 + output_size("stdout", CHUNK)


async def test_a_batched_caller_that_does_not_collect_holds_the_run(sock: Path) -> None:
    script = [("stdout", CHUNK)] * 128  # 8 MiB
    async with book_on(sock, {"r": script}) as (book, fake):
        first = await book.execute("r", "query", "", {}, 0.0, None)
        assert first.status == "continued"
        await until(lambda: book.channel.paused, "the channel pauses past the bound")
        assert fake.written["r"] < len(script)
        seen = text_of(first.console)
        while True:  # the caller comes back: each collect lets more through
            nxt = await book.execute("r", "continue", "", {}, 0.5, None)
            seen += text_of(nxt.console)
            if nxt.status == "finished":
                break
    assert seen == CHUNK * len(script)
    assert book.peak <= LIMIT + READ_SIZE + 2 * READ_LIMIT + len(CHUNK) + 4096


async def test_a_run_that_a_later_run_waits_for_drops_with_a_note(sock: Path) -> None:
    script = [("stdout", CHUNK)] * 128  # 8 MiB nobody collects
    scripts = {"r1": script, "r2": [("stdout", "second\n")]}
    async with book_on(sock, scripts) as (book, _fake):
        first = await book.execute("r1", "query", "", {}, 0.0, None)
        assert first.status == "continued"
        await until(lambda: book.channel.paused, "the channel pauses past the bound")
        second = await asyncio.wait_for(book.execute("r2", "query", "", {}, None, None), 30)
        assert second.status == "finished"
        assert text_of(second.console) == "second\n"
        rest = await book.execute("r1", "continue", "", {}, 0.0, None)
    assert rest.status == "finished"
    items = first.console + rest.console
    notes = [d for k, d in items if k == "stderr"]
    assert len(notes) == 1
    match = re.search(r"\[kernlet: (\d+) bytes of output were dropped: .*run-output-buffer", notes[0])
    assert match is not None
    kept = sum(output_size(k, d) for k, d in items if k == "stdout")
    assert int(match.group(1)) == sum(output_size(k, d) for k, d in script) - kept
    assert int(match.group(1)) > 0
    assert text_of(items) == CHUNK * (len(text_of(items)) // len(CHUNK))  # whole chunks
    assert book.peak <= LIMIT + READ_SIZE + 2 * READ_LIMIT + len(CHUNK) + 4096


async def test_a_request_is_answered_while_the_run_is_held(sock: Path) -> None:
    script = [("stdout", CHUNK)] * 128
    async with book_on(sock, {"r": script}) as (book, _fake):
        first = await book.execute("r", "query", "", {}, 0.0, None)
        await until(lambda: book.channel.paused, "the channel pauses past the bound")
        # the completion's reply waits behind the held output: the channel reads on for it,
        # dropping past twice the bound (with a note) rather than growing
        reply = await asyncio.wait_for(book.complete("x", None), 30)
        assert reply == {"matches": ["x"]}
        items = list(first.console)
        while True:
            nxt = await asyncio.wait_for(book.execute("r", "continue", "", {}, None, None), 30)
            items += nxt.console
            if nxt.status == "finished":
                break
    assert book.peak <= 2 * LIMIT + READ_SIZE + 2 * READ_LIMIT + len(CHUNK) + 4096
    stdout = sum(output_size(k, d) for k, d in items if k == "stdout")
    notes = [d for k, d in items if k == "stderr"]
    dropped = sum(int(m) for n in notes for m in re.findall(r"kernlet: (\d+) bytes", n))
    assert stdout + dropped == sum(output_size(k, d) for k, d in script)


async def test_a_batched_call_without_flush_timeout_returns_continued_at_the_bound(
    sock: Path,
) -> None:
    script = [("stdout", CHUNK)] * 64  # 4 MiB
    async with book_on(sock, {"r": script}) as (book, _fake):
        first = await asyncio.wait_for(book.execute("r", "query", "", {}, None, None), 30)
        assert first.status == "continued"
        assert LIMIT <= sum(output_size(k, d) for k, d in first.console) <= 2 * LIMIT
        seen, status = text_of(first.console), first.status
        while status != "finished":
            nxt = await asyncio.wait_for(book.execute("r", "continue", "", {}, None, None), 30)
            seen, status = seen + text_of(nxt.console), nxt.status
    assert seen == CHUNK * len(script)


def test_run_output_buffer_is_configurable(tmp_path: Path) -> None:
    assert AgentConfig().limits.run_output_buffer == 8 * 1024 * 1024
    path = tmp_path / "agent.toml"
    path.write_text('[limits]\nrun-output-buffer = "2m"\n')
    assert load_config(path).limits.run_output_buffer == 2 * 1024 * 1024
    path.write_text('[limits]\nrun-output-buffer = "1k"\n')
    with pytest.raises(ConfigError, match="run-output-buffer"):
        load_config(path)
