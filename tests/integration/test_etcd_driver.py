"""The etcd driver against the halfstack's etcd (a namespace per test), and a private etcd
that is stopped and started again under a running watch and liveness key."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aetcd
import pytest

from integration.conftest import wait_for
from integration.servers import PrivateEtcd, free_port, port_open
from kernlet.drivers.etcd import ConfigChange, EtcdDriver, EtcdError

pytestmark = pytest.mark.integration


@pytest.fixture
async def etcd() -> AsyncIterator[EtcdDriver]:
    if not port_open(2379):
        pytest.fail("etcd not running on 127.0.0.1:2379: run `kernlet halfstack up`")
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    driver = EtcdDriver(namespace=namespace, reconnect_delay=0.2)
    yield driver
    await driver.close()
    async with aetcd.Client(host="127.0.0.1", port=2379) as raw:
        await raw.delete_prefix(f"/kernlet/{namespace}/".encode())


async def next_change(changes: AsyncIterator[ConfigChange], timeout: float = 10) -> ConfigChange:
    return await asyncio.wait_for(changes.__anext__(), timeout)


async def test_settings_as_a_flat_dict(etcd: EtcdDriver) -> None:
    assert await etcd.get_config() == {}
    await etcd.put("config/redis/addr", "127.0.0.1:6379")
    await etcd.put("config/image/pull-policy", "digest")
    await etcd.put("nodes/agents/other", "{}")  # outside config/: not a setting
    assert await etcd.get_config() == {
        "redis/addr": "127.0.0.1:6379", "image/pull-policy": "digest"}
    assert await etcd.get("config/redis/addr") == "127.0.0.1:6379"
    await etcd.delete("config/redis/addr")
    assert await etcd.get("config/redis/addr") is None


async def test_watch_sees_changes(etcd: EtcdDriver) -> None:
    await etcd.put("config/before", "1")
    known = await etcd.get_config()
    await etcd.put("config/between", "read and watch")  # not lost: diffed against `known`
    changes = etcd.watch_config(known)
    assert await next_change(changes) == ConfigChange("between", "read and watch")
    await etcd.put("config/resource/reserved-mem", "1g")
    assert await next_change(changes) == ConfigChange("resource/reserved-mem", "1g")
    await etcd.delete("config/before")
    assert await next_change(changes) == ConfigChange("before", None)
    await changes.aclose()


async def test_liveness_key_lives_while_refreshed_and_expires_after_ttl(etcd: EtcdDriver) -> None:
    lease = etcd.liveness("agent-1", '{"id": "agent-1"}', ttl=2)
    await lease.start()
    key = "nodes/agents/agent-1"
    assert lease.alive and await etcd.get(key) == '{"id": "agent-1"}'
    await asyncio.sleep(3.0)  # longer than the TTL: the refresh task keeps it
    assert await etcd.get(key) is not None
    await lease.update('{"id": "agent-1", "n": 2}')
    assert await etcd.get(key) == '{"id": "agent-1", "n": 2}'
    await lease.stop(revoke=False)  # as if the agent died: nobody refreshes
    started = time.monotonic()
    await wait_for(lambda: _missing(etcd, key), timeout=6, interval=0.2)
    assert time.monotonic() - started < 4.5


async def _put(etcd: EtcdDriver, key: str, value: str) -> bool:
    try:
        await etcd.put(key, value)
    except EtcdError:
        return False
    return True


async def _missing(etcd: EtcdDriver, key: str) -> bool:
    return await etcd.get(key) is None


async def test_clean_shutdown_revokes_at_once(etcd: EtcdDriver) -> None:
    lease = etcd.liveness("agent-2", "up", ttl=30)
    await lease.start()
    assert await etcd.get("nodes/agents/agent-2") == "up"
    await lease.stop()
    assert await etcd.get("nodes/agents/agent-2") is None and not lease.alive


async def test_errors_are_translated() -> None:
    down = EtcdDriver(port=free_port(), namespace="nobody", timeout=1.0)
    with pytest.raises(EtcdError, match="etcd read config"):
        await down.get_config()
    lease = down.liveness("a", "x", ttl=2)
    await lease.start()  # logged, not raised: the agent runs on without etcd
    assert not lease.alive
    await lease.stop()
    await down.close()
    with pytest.raises(ValueError):
        EtcdDriver(namespace="a/b")


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[PrivateEtcd]:
    server = PrivateEtcd(tmp_path / "etcd")
    server.start()
    yield server
    server.stop()


async def test_watch_and_liveness_survive_an_etcd_restart(private_etcd: PrivateEtcd) -> None:
    etcd = EtcdDriver(port=private_etcd.port, namespace="ns", timeout=1.0,
                      reconnect_delay=0.2)
    other = EtcdDriver(port=private_etcd.port, namespace="ns", timeout=1.0)
    lease = etcd.liveness("a", "up", ttl=3)
    changes = etcd.watch_config({})
    pending: asyncio.Future[ConfigChange] | None = None
    try:
        await lease.start()
        await other.put("config/x", "1")
        assert await next_change(changes) == ConfigChange("x", "1")
        pending = asyncio.ensure_future(next_change(changes, timeout=30))

        private_etcd.stop()
        await wait_for(lambda: not lease.alive, timeout=5, interval=0.1)
        assert not pending.done()
        private_etcd.start()  # same data dir: the settings and the lease are still there
        await wait_for(lambda: _put(other, "config/x", "2"), timeout=10, interval=0.1)
        assert await pending == ConfigChange("x", "2")
        await wait_for(lambda: lease.alive, timeout=10, interval=0.1)
        assert await other.get("nodes/agents/a") == "up"
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        await changes.aclose()
        await lease.stop()
        await etcd.close()
        await other.close()
