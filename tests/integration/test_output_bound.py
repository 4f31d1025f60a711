"""A run printing a lot as fast as it can, streamed to a client that reads slowly: the agent
holds a bounded amount of it (its RSS, read from /proc, grows by under 50 MiB), and the caller
either gets everything (the kernel was slowed) or is told how much was dropped. The client's
credit (flow control, docs/protocol.md) keeps the agent from sending faster than the reader
processes, so nothing is lost in the reader's NATS subscription either.

``KERNLET_TEST_OUTPUT_MIB`` sets the size printed (default 1024 MiB, in 1 MiB writes; a query
run prints at most 512 MiB, which a 3 GiB kernel survives)."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess
from kernlet.client import DEFAULT_CREDIT, KernletClient

MIB = 1024 * 1024
BATCH_MIB = int(os.environ.get("KERNLET_TEST_OUTPUT_MIB", "1024"))
QUERY_MIB = min(BATCH_MIB, 512)
NOTE = re.compile(r"\[kernlet: (\d+) bytes of output were dropped")


def rss(pid: int) -> int:
    """Resident set size of a process in bytes, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class PeakSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = rss(pid)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(self.interval)


def query_code(mib: int) -> str:
    return (
        "import sys\n"
        f"chunk = 'x' * {MIB}\n"
        f"for _ in range({mib}):\n"
        "    sys.stdout.write(chunk)\n"
        "sys.stdout.flush()\n"
    )


def batch_command(mib: int) -> str:
    """1 MiB writes of x, as fast as the pipe takes them."""
    return f"python3 -c \"import sys\nfor _ in range({mib}): sys.stdout.write('x' * {MIB})\""


@dataclass
class Outcome:
    status: str
    total: int
    received: int
    told_dropped: int
    notes: int
    rss_before: int
    rss_peak: int
    slow_consumer: int
    elapsed: float

    @property
    def growth(self) -> int:
        return self.rss_peak - self.rss_before


async def slow_read(agent: AgentProcess, mode: str, mib: int,
                    credit: int | None = DEFAULT_CREDIT) -> Outcome:
    """Create a kernel, have it print ``mib`` MiB as fast as it can, stream it to a reader
    that sleeps 2 ms an item (with flow control of ``credit`` bytes; None: none); sample the
    agent's RSS meanwhile."""
    assert agent.proc is not None
    slow = 0

    async def error_cb(exc: Exception) -> None:
        nonlocal slow
        if isinstance(exc, nats.errors.SlowConsumerError):
            slow += 1  # nats-py dropped a message its subscription had no room for

    nc = await nats.connect(NATS_URL, error_cb=error_cb)
    client = KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=90, nc=nc)
    # the ipykernel itself keeps what it is given faster than it sends: room for that
    kid = (await client.create_kernel(IMAGE, cpu=1, mem=3072 * MIB))["id"]
    try:
        warm = await client.execute(kid, "print('warm')")  # the run path's own allocations
        assert warm["status"] == "finished"
        code, opts = (query_code(mib), None) if mode == "query" else (
            "", {"exec": batch_command(mib)})
        before = rss(agent.proc.pid)
        sampler = PeakSampler(agent.proc.pid)
        sampler.start()
        received, dropped, notes = 0, 0, 0
        result: dict[str, Any] = {}
        started = time.monotonic()

        async def consume() -> None:
            nonlocal received, dropped, notes
            async for kind, data in client.stream(kid, code, mode, opts=opts, credit=credit):
                if kind == "stdout":
                    received += len(data)
                elif kind == "stderr":
                    told = [int(n) for n in NOTE.findall(data)]
                    dropped += sum(told)
                    notes += len(told)
                elif kind == "result":
                    result.update(data)
                await asyncio.sleep(0.002)  # a reader slower than the kernel

        try:
            await asyncio.wait_for(consume(), 150)
        finally:
            sampler.halt.set()
            sampler.join()
        elapsed = time.monotonic() - started
    finally:
        await client.destroy_kernel(kid)
        await nc.close()
    out = Outcome(str(result.get("status")), mib * MIB, received, dropped, notes, before,
                  sampler.peak, slow, elapsed)
    print(f"\n{mode}: {mib} MiB in {out.elapsed:.1f} s: received {received / MIB:.1f} MiB, "
          f"dropped (as told) {dropped / MIB:.1f} MiB in {notes} notes; agent RSS "
          f"{before / MIB:.1f} MiB before, peak {out.rss_peak / MIB:.1f} MiB "
          f"(+{out.growth / MIB:.1f} MiB); client-side slow-consumer drops: {slow}")
    return out


class LaggingNats:
    """A TCP proxy to NATS that passes what the agent sends at ``rate`` bytes/s (what the
    server sends back passes at once): NATS lags behind the agent's publishing."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> LaggingNats:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 4222)
        for pipe in (self._pipe(reader, up_writer, self.rate), self._pipe(up_reader, writer)):
            task = asyncio.create_task(pipe)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    rate: int | None = None) -> None:
        try:
            while data := await src.read(64 * 1024):
                dst.write(data)
                await dst.drain()
                if rate is not None:
                    await asyncio.sleep(len(data) / rate)
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()


def accounted(out: Outcome) -> bool:
    """Every byte arrived or a note told of it (notes count 64 bytes a message more)."""
    return out.total <= out.received + out.told_dropped <= (
        out.total + out.total // 500 + 64 * out.notes)


@pytest.mark.timeout(200)
async def test_query_output_to_a_slow_reader_is_bounded_and_drops_are_told(
    agent: AgentProcess,
) -> None:
    # 1 GiB OOM-kills a 3 GiB kernel: the ipykernel buffers the text it is given
    out = await slow_read(agent, "query", QUERY_MIB)
    assert out.status == "finished"
    assert out.growth < 50 * MIB
    assert accounted(out)
    assert out.slow_consumer == 0


@pytest.mark.timeout(240)
async def test_batch_output_to_a_slow_reader_slows_the_command_and_loses_nothing(
    agent: AgentProcess,
) -> None:
    """1 GiB as fast as the pipe takes it, read slowly: the reader's credit holds the agent
    back, the agent's full buffer pauses the runtime channel, the runtime's full outbox
    blocks the command's pipe. Everything arrives; the agent holds a bounded amount."""
    out = await slow_read(agent, "batch", BATCH_MIB)
    assert out.status == "finished"
    assert out.growth < 50 * MIB
    assert out.slow_consumer == 0  # nothing dropped in the reader's subscription
    assert out.told_dropped == 0  # nor by kernlet
    assert out.received == out.total


@pytest.mark.timeout(200)
async def test_a_caller_without_credit_streams_as_before(agent: AgentProcess) -> None:
    """An old client (no ``credit``): the agent sends as the run prints; a reader that
    keeps up gets everything."""
    out = await slow_read(agent, "batch", 16, credit=None)
    assert out.status == "finished"
    assert out.received == out.total


@pytest.mark.timeout(240)
async def test_query_output_while_nats_lags_is_bounded_and_drops_are_told(
    halfstack: None, tmp_path: Path
) -> None:
    """The agent's publishing to NATS is slowed to 8 MiB/s (the issue's case): its output
    buffer and its NATS client's outgoing buffer must not take up the difference."""
    async with LaggingNats(rate=8 * MIB) as proxy:
        agent = AgentProcess(tmp_path, f"test-{uuid.uuid4().hex[:8]}",
                             extra=f'[nats]\nurl = "nats://127.0.0.1:{proxy.port}"\n')
        await asyncio.to_thread(agent.start)
        try:
            out = await slow_read(agent, "query", min(QUERY_MIB, 256))
        finally:
            await asyncio.to_thread(agent.cleanup)
    assert out.status == "finished"
    assert out.growth < 50 * MIB
    assert accounted(out)
    assert out.told_dropped > 0  # the kernel outran NATS: the runtime dropped, and said so
