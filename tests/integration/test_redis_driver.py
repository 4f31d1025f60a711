"""The stats writer against the halfstack's Redis, and a private Redis that goes away and
comes back while the writer's loop runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from integration.conftest import wait_for
from integration.servers import PrivateRedis, port_open
from kernlet.drivers.redis import KERNEL_KEY, NODE_KEY, StatsStoreError, StatsWriter

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    if not port_open(6379):
        pytest.fail("redis not running on 127.0.0.1:6379: run `kernlet halfstack up`")
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def test_node_and_kernel_keys_with_expiry(raw: aioredis.Redis) -> None:
    agent, k1, k2 = (f"test-{uuid.uuid4().hex[:8]}" for _ in range(3))
    writer = StatsWriter(agent, REDIS_URL, kernel_ttl=1.0)
    node = {"time": 1.5, "cpu_util": 12.5, "mem_used": 2**33, "cpu_util_none": None}
    try:
        await writer.write(node, {k1: {"cpu_util": 99.0, "mem": 123}, k2: {"mem": 7}})
        assert await writer.read_node() == node
        assert await writer.read_kernel(k1) == {"cpu_util": 99.0, "mem": 123}
        assert await writer.read_node("nobody") is None
        node_key, kernel_key = NODE_KEY.format(agent_id=agent), KERNEL_KEY.format(kernel_id=k2)
        assert node_key == f"kernlet:stats:node:{agent}"
        assert kernel_key == f"kernlet:stats:kernel:{k2}"
        assert 115_000 < await raw.pttl(node_key) <= 120_000
        assert 0 < await raw.pttl(kernel_key) <= 1000
        # the kernel's key goes away by itself soon after it stops being written
        await wait_for(lambda: _gone(raw, kernel_key), timeout=5, interval=0.1)
        assert await writer.read_kernel(k2) is None
        assert await writer.read_node() == node
    finally:
        await raw.delete(NODE_KEY.format(agent_id=agent))
        await writer.close()


async def _gone(raw: aioredis.Redis, key: str) -> bool:
    return not await raw.exists(key)


async def test_writer_survives_a_redis_outage(private_redis: PrivateRedis) -> None:
    writer = StatsWriter("outage", private_redis.url, timeout=0.5)
    ticks = 0
    broken = False

    async def sample() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        nonlocal ticks, broken
        ticks += 1
        if broken:
            broken = False
            raise RuntimeError("a sampling bug")
        return {"tick": ticks}, {"k": {"tick": ticks}}

    loop = asyncio.create_task(writer.run(sample, interval=0.05))
    try:
        await wait_for(lambda: writer.read_node(), timeout=5, interval=0.05)
        private_redis.stop()
        await wait_for(lambda: writer.failures >= 3, timeout=10, interval=0.05)
        assert not writer.healthy and not loop.done()
        with pytest.raises(StatsStoreError, match="ConnectionError"):
            await writer.write({"x": 1}, {})
        assert await writer.try_write({"x": 1}, {}) is False
        broken = True  # a failing sample is survived too
        await wait_for(lambda: not broken, timeout=5, interval=0.05)
        stopped_at = ticks

        private_redis.start()  # empty: the outage lost everything
        node = await wait_for(lambda: writer.read_node(), timeout=10, interval=0.05)
        # the writer marks itself healthy when the reply to its write arrives, and our read of
        # that write can be answered first (another connection): wait for the flag itself
        await wait_for(lambda: writer.healthy, timeout=5, interval=0.05)
        assert node["tick"] > stopped_at and not loop.done()
        assert (await writer.read_kernel("k") or {}).get("tick", 0) > stopped_at
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop
        await writer.close()
