"""Many kernels on one node: fill the box with kernels of the documented minimum size, in
calls of 20, restart the agent, then reset it. Every kernel starts, every one is re-adopted
and runs code, the reset answers, and no actor logs an unhandled exception."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess
from kernlet.client import KernletClient
from kernlet.config import ContainerSection

pytestmark = pytest.mark.integration

KERNELS = 40
#: 40 kernels share the box's 2 cores: 0.04 cpu each is a guarantee of 1.6 cores
CPU = 0.04
MEM = ContainerSection().min_mem


@pytest.fixture
def big_agent(halfstack: None, tmp_path: Path) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path, f"many-{uuid.uuid4().hex[:8]}")
    text = proc.config.read_text().replace("[agent]\n", "[agent]\ncreate-timeout = 300\n", 1)
    # two service ports a kernel, 80 in all: a range of its own, clear of other test agents'
    text = text.replace("[container]\n", "[container]\nport-range = [31200, 31400]\n", 1)
    proc.config.write_text(text)
    proc.start()
    yield proc
    proc.cleanup()


@pytest.mark.timeout(900)
async def test_a_box_full_of_minimum_kernels_survives_restart_and_reset(
    big_agent: AgentProcess,
) -> None:
    agent = big_agent
    async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=600) as c:
        t0 = time.monotonic()
        made: list[dict[str, object]] = []
        for _ in range(KERNELS // 20):
            made += await c.create_kernels([{"image": IMAGE, "cpu": CPU, "mem": MEM}] * 20)
        failed = [k for k in made if not k.get("ok")]
        assert failed == [], failed[:2]
        print(f"{KERNELS} kernels of {CPU} cpu, {MEM >> 20} MiB: "
              f"created in {time.monotonic() - t0:.1f} s")
    ids = [str(k["id"]) for k in made]

    agent.stop()  # SIGTERM: the kernels keep running
    agent.start(timeout=120)
    async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=600) as c:
        live = {k["id"] for k in await c.list_kernels()}
        assert live == set(ids)
        t0 = time.monotonic()
        for kernel_id in ids:
            res = await c.execute(kernel_id, "print(6 * 7)")
            assert res["console"] == [["stdout", "42\n"]], (kernel_id, res)
        print(f"all re-adopted; one execute each in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        destroyed = await c.reset_agent()
        print(f"reset of {KERNELS} kernels answered in {time.monotonic() - t0:.1f} s")
        assert sorted(destroyed) == sorted(ids)
        assert await c.list_kernels() == []
    assert agent.containers() == [] and agent.scratch_dirs() == []
    log = agent.log.read_text()
    assert "Unhandled exception" not in log and "Traceback" not in log
