"""Crash harness: kill the agent at every lifecycle step, then check that nothing was lost.

30+ crash points: one right after each kind of lifecycle event becomes durable
(``debug.crash-after``, the process exits like SIGKILL), and randomised SIGKILLs during create,
start, exec and destroy. After each restart:

- no orphan container and no leaked scratch or runtime dir: they match the live kernels;
- a survivor kernel created before all crashes still runs code and keeps its state;
- every live kernel runs code;
- at the end, every event of the log is in the JetStream stream exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, wait_for
from integration.test_recovery import jetstream_event_ids
from kernlet.client import KernletClient
from kernlet.errors import KernletError
from kernlet.events import AGENT_STREAM
from kernlet.store import SQLiteEventLog

pytestmark = pytest.mark.integration

CRASH_POINTS = [
    "kernel_preparing",
    "kernel_creating",
    "container_created",
    "kernel_started",
    "execution_started",
    "execution_finished",
    "kernel_terminating",
    "kernel_terminated",
]
RANDOM_KILLS = 22
SEED = 20261130


def configure(agent: AgentProcess, crash_after: str | None) -> None:
    base = agent.config.read_text().split("[debug]")[0]
    if crash_after:
        base += f'[debug]\ncrash-after = "{crash_after}"\n'
    agent.config.write_text(base)


async def workload(client: KernletClient) -> None:
    """Create a kernel, run code in it, destroy it: every lifecycle step once."""
    k = await client.create_kernel(IMAGE, mem=256 * 1024**2)
    await client.execute(k["id"], "z = sum(range(10))\nprint(z)")
    await client.destroy_kernel(k["id"])


async def run_until_dead(agent: AgentProcess, kill_after: float | None) -> int | None:
    """Run the workload until the agent dies (crash point) or we SIGKILL it."""
    assert agent.proc is not None
    async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=30) as c:
        task = asyncio.create_task(workload(c))
        deadline = asyncio.get_running_loop().time() + 40
        killed_at = None if kill_after is None else asyncio.get_running_loop().time() + kill_after
        while agent.proc.poll() is None and asyncio.get_running_loop().time() < deadline:
            if killed_at is not None and asyncio.get_running_loop().time() >= killed_at:
                agent.proc.send_signal(signal.SIGKILL)
            if task.done() and killed_at is None:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, KernletError, Exception):
            await task
    if agent.proc.poll() is None:
        agent.proc.send_signal(signal.SIGKILL)
    return agent.proc.wait(10)


async def settled(client: KernletClient) -> list[dict[str, Any]]:
    """Wait until no kernel is on its way up or down; the live kernels."""
    async def steady() -> list[dict[str, Any]] | None:
        ks = await client.list_kernels()
        return ks if all(k["state"] == "running" for k in ks) else None

    result = await wait_for(steady, timeout=60)
    return list(result or [])


async def check_invariants(client: KernletClient, agent: AgentProcess, survivor: str,
                           point: str) -> None:
    live = await settled(client)
    live_ids = {k["id"] for k in live}
    assert survivor in live_ids, f"{point}: the survivor kernel was lost"

    def clean() -> bool:
        containers = set(agent.containers())
        owned = {k["container_id"][:12] for k in live}
        ipc = {p.name for p in (agent.var_dir / "ipc").iterdir()}
        return ({c[:12] for c in containers} == owned and set(agent.scratch_dirs()) == live_ids
                and ipc == live_ids)

    await wait_for(clean, timeout=30)
    res = await client.execute(survivor, "print(secret)")
    assert res["console"] == [["stdout", "kept\n"]], f"{point}: survivor lost its state"
    for k in live:
        out = await client.execute(k["id"], "print(1 + 1)")
        assert out["exitCode"] == 0, f"{point}: kernel {k['id']} cannot run code"
    for k in live:  # back to the survivor only, for the next round
        if k["id"] != survivor:
            await client.destroy_kernel(k["id"])


async def test_crash_harness(halfstack: None, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    agent = AgentProcess(tmp_path, f"crash-{uuid.uuid4().hex[:8]}")
    points: list[tuple[str, float | None]] = [(p, None) for p in CRASH_POINTS]
    points += [(f"sigkill@{t:.2f}s", t) for t in
               (rng.uniform(0.0, 3.0) for _ in range(RANDOM_KILLS))]
    rng.shuffle(points)
    assert len(points) >= 30
    try:
        configure(agent, None)
        agent.start()
        async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=60) as c:
            survivor = (await c.create_kernel(IMAGE, mem=256 * 1024**2))["id"]
            await c.execute(survivor, "secret = 'kept'")
        agent.stop(signal.SIGKILL)
        for point, kill_after in points:
            configure(agent, None if kill_after is not None else point)
            try:
                agent.start()
            except RuntimeError:
                # the crash point came during recovery itself (e.g. a run's end recorded)
                assert kill_after is None and agent.proc is not None
                code = agent.proc.wait(10)
            else:
                code = await run_until_dead(agent, kill_after)
            if kill_after is None:
                assert code == 137, f"{point}: the agent did not reach its crash point"
            configure(agent, None)
            agent.start()
            async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=60) as c:
                await check_invariants(c, agent, survivor, point)
            agent.stop(signal.SIGKILL)
        # every event of the log is in JetStream exactly once
        configure(agent, None)
        agent.start()
        await asyncio.sleep(2)
        agent.stop(signal.SIGTERM)
        log = SQLiteEventLog(agent.var_dir / "log" / "events.sqlite")
        await log.open()
        try:
            logged: set[str] = set()
            for stream in [*await log.kernel_ids(), AGENT_STREAM]:
                logged |= {e.event_id for e in await log.read_stream(stream)}
            assert await log.undelivered_count() == 0
        finally:
            await log.close()
        delivered = await jetstream_event_ids(NATS_URL, agent.agent_id)
        assert len(delivered) == len(set(delivered)), "an event reached JetStream twice"
        assert set(delivered) == logged
    finally:
        agent.cleanup()
