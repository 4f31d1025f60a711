"""The warm pool (docs/pool.md) on real Docker: a fitting create takes the pooled container
(same container id, code runs in it, its facts say the taker's ids), a create that does not
fit is cold, the pool refills, pool and taken kernels survive an agent SIGKILL and restart,
and nothing is left after destroy and reset."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, docker, wait_for
from kernlet.client import KernletClient

pytestmark = pytest.mark.integration

MEM = 256 * 1024**2


@pytest.fixture
def pool_agent(halfstack: None, tmp_path: Path) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path, f"pool-{uuid.uuid4().hex[:8]}",
                        extra=f'[pool."{IMAGE}"]\nsize = 1\ncpu = 0.1\nmem = "256m"\n')
    proc.config.write_text(proc.config.read_text().replace(
        "[container]\n", "[container]\nport-range = [31000, 31099]\n").replace(
        "[agent]\n", "[agent]\nreconcile-interval = 1\norphan-grace = 2\n"))
    proc.start()
    yield proc
    proc.cleanup()


@pytest.fixture
async def pclient(pool_agent: AgentProcess) -> AsyncIterator[KernletClient]:
    async with KernletClient(NATS_URL, agent_id=pool_agent.agent_id, timeout=90) as c:
        yield c


async def ready_pool(client: KernletClient) -> dict[str, Any]:
    async def one() -> dict[str, Any] | None:
        ks = [k for k in await client.list_kernels() if k["pool"] and k["state"] == "running"]
        return ks[0] if len(ks) == 1 else None
    return await wait_for(one, timeout=90)  # type: ignore[no-any-return]


async def stdout_of(client: KernletClient, kernel_id: str, code: str) -> str:
    res = await client.execute(kernel_id, code)
    return "".join(d for k, d in res["console"] if k == "stdout")


async def test_take_cold_refill_restart_and_no_leaks(pool_agent: AgentProcess,
                                                    pclient: KernletClient) -> None:
    pooled = await ready_pool(pclient)
    assert pooled["session_id"] == "pool" and pooled["pool"] == IMAGE
    labels = docker("inspect", "-f", "{{json .Config.Labels}}", pooled["container_id"])
    assert '"ai.kernlet.pool"' in labels

    taken = await pclient.create_kernel(IMAGE, cpu=0.1, mem=MEM)
    assert taken["container_id"] == pooled["container_id"]
    assert taken["pool"] == pooled["id"]
    assert [e["type"] for e in await pclient.events(taken["id"])] == [
        "kernel_preparing", "kernel_creating", "container_created", "kernel_started"]
    out = await stdout_of(pclient, taken["id"],
                          "from kernlet import helpers; print(helpers.kernel_id())")
    assert out.strip() == taken["id"]

    cold = await pclient.create_kernel(IMAGE, cpu=0.1, mem=MEM, environ={"A": "1"})
    assert cold["container_id"] != pooled["container_id"] and "pool" not in cold

    fresh = await ready_pool(pclient)  # the refill
    assert fresh["id"] != pooled["id"]

    pool_agent.stop(signal.SIGKILL)
    pool_agent.start()
    async with KernletClient(NATS_URL, agent_id=pool_agent.agent_id, timeout=90) as c:
        again = await ready_pool(c)
        assert again["id"] == fresh["id"]  # re-adopted, not replaced
        assert await stdout_of(c, taken["id"], "print(6*7)") == "42\n"
        second = await c.create_kernel(IMAGE, cpu=0.1, mem=MEM)
        assert second["container_id"] == fresh["container_id"]

        for kernel_id in (taken["id"], cold["id"], second["id"]):
            await c.destroy_kernel(kernel_id)
        assert pooled["container_id"] not in pool_agent.containers()
        assert pooled["id"] not in pool_agent.scratch_dirs()
        await ready_pool(c)
        await c.reset_agent()
        gone = {pooled["container_id"], fresh["container_id"], cold["container_id"]}
        assert not gone & set(pool_agent.containers())
        # the refill starts again after a reset; destroying it leaves nothing of it
        refilled = await ready_pool(c)
        await c.destroy_kernel(refilled["id"])
        assert refilled["container_id"] not in pool_agent.containers()
        assert refilled["id"] not in pool_agent.scratch_dirs()
    pool_agent.stop()  # (kernels outlive the agent by design: only the pool's are left)
    pooled_now = set(docker("ps", "-aq", "--filter", f"label=ai.kernlet.agent-id="
                            f"{pool_agent.agent_id}", "--filter", "label=ai.kernlet.pool").split())
    assert set(pool_agent.containers()) == pooled_now
    assert all(d.startswith("pool-") for d in pool_agent.scratch_dirs())
