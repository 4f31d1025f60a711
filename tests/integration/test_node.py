"""Reporting the node: heartbeat, etcd liveness and settings, stats in Redis, outages survived."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import aetcd
import pytest
import redis.asyncio as aioredis

from integration.conftest import IMAGE, NATS_URL, AgentProcess, docker, wait_for
from integration.servers import PrivateRedis
from kernlet.client import KernletClient
from kernlet.events import unpack

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def node_agent(halfstack: None, tmp_path: Path, redis_server: PrivateRedis
               ) -> Iterator[AgentProcess]:
    ns = f"t{uuid.uuid4().hex[:8]}"
    agent = AgentProcess(
        tmp_path, f"node-{uuid.uuid4().hex[:8]}",
        extra=(f"[heartbeat]\ninterval = 1\n[stats]\ninterval = 1\n"
               f'[redis]\nurl = "redis://127.0.0.1:{redis_server.port}/0"\n'
               f'[etcd]\nnamespace = "{ns}"\nlease-ttl = 2\n'),
    )
    agent.namespace = ns  # type: ignore[attr-defined]
    agent.config.write_text(agent.config.read_text().replace(
        "[agent]\n", '[agent]\nadvertised-host = "10.1.2.3"\n'))
    agent.start()
    yield agent
    agent.cleanup()


async def test_heartbeat_content_and_liveness_lease(node_agent: AgentProcess) -> None:
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        sub = await nc.subscribe(f"kernlet.heartbeat.{node_agent.agent_id}")
        async with KernletClient(NATS_URL, agent_id=node_agent.agent_id, nc=nc) as c:
            k = await c.create_kernel(IMAGE, cpu=0.5, mem=256 * 1024**2)

            async def beat_with_kernel() -> dict | None:
                info = unpack((await sub.next_msg(timeout=5)).data)
                return info if any(x["id"] == k["id"] for x in info["kernels"]) else None

            info = await wait_for(beat_with_kernel, timeout=15)
            assert info["id"] == node_agent.agent_id and info["version"]
            # a manager elsewhere is told the advertised address, not the bind host
            assert info["host"] == k["host"] == "10.1.2.3"
            assert info["resource_slots"]["cpu"][0] == "count"
            assert info["resource_slots"]["mem"][0] == "bytes"
            assert float(info["slots_used"]["cpu"]["used"]) >= 0.5
            assert IMAGE in {i["name"] for i in info["images"]}
            assert "cpu" in info["compute_plugins"]
            await c.destroy_kernel(k["id"])
    finally:
        await nc.close()
    key = f"/kernlet/{node_agent.namespace}/nodes/agents/{node_agent.agent_id}".encode()  # type: ignore[attr-defined]
    etcd = aetcd.Client()
    try:
        assert (await etcd.get(key)) is not None
        node_agent.stop(signal.SIGKILL)  # no revoke: the lease must expire by itself

        async def expired() -> bool:
            return await etcd.get(key) is None

        await wait_for(expired, timeout=15)
    finally:
        await etcd.close()


async def test_stats_in_redis_and_a_redis_outage(
    node_agent: AgentProcess, redis_server: PrivateRedis
) -> None:
    async with KernletClient(NATS_URL, agent_id=node_agent.agent_id, timeout=60) as c:
        k = await c.create_kernel(IMAGE, cpu=1, mem=256 * 1024**2)
        run = asyncio.create_task(c.execute(k["id"], "while True: pass"))
        r = aioredis.Redis(port=redis_server.port)
        try:
            async def busy() -> dict | None:
                raw = await r.get(f"kernlet:stats:kernel:{k['id']}")
                stats = unpack(raw) if raw else None
                return stats if stats and (stats.get("cpu_util") or 0) > 30 else None

            stats = await wait_for(busy, timeout=30)
            assert 0 < stats["mem"] <= 256 * 1024**2
            assert 0 < await r.ttl(f"kernlet:stats:kernel:{k['id']}") <= 10
            node = unpack(await r.get(f"kernlet:stats:node:{node_agent.agent_id}"))
            assert node["mem_total"] > 0 and 60 < await r.ttl(
                f"kernlet:stats:node:{node_agent.agent_id}") <= 120
            await r.aclose()
            # Redis goes away: the agent keeps serving; when it is back, writes resume
            redis_server.stop()
            await asyncio.sleep(3)
            assert (await c.ping("still here"))["msg"] == "still here"
            redis_server.start()  # empty: a fresh Redis on the same port
            r = aioredis.Redis(port=redis_server.port)

            async def resumed() -> bool:
                return bool(await r.get(f"kernlet:stats:node:{node_agent.agent_id}"))

            await wait_for(resumed, timeout=20)
        finally:
            await c.interrupt(k["id"])
            await asyncio.wait_for(run, 20)
            await c.destroy_kernel(k["id"])
            await r.aclose()


async def test_etcd_setting_applied_while_running(node_agent: AgentProcess) -> None:
    etcd = aetcd.Client()
    key = f"/kernlet/{node_agent.namespace}/config/container/default-mem".encode()  # type: ignore[attr-defined]
    try:
        await etcd.put(key, b"300m")
        async with KernletClient(NATS_URL, agent_id=node_agent.agent_id, timeout=60) as c:
            async def applied() -> bool:
                return "cluster settings applied" in node_agent.log.read_text()

            await wait_for(applied, timeout=15)
            k = await c.create_kernel(IMAGE)
            mem = docker("inspect", "-f", "{{.HostConfig.Memory}}", k["container_id"]).strip()
            assert mem == str(300 * 1024**2)
            await c.destroy_kernel(k["id"])
    finally:
        await etcd.delete(key)
        await etcd.close()
