"""In-container services on published loopback ports, and the port pool's limits."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, docker
from kernlet.client import KernletClient
from kernlet.errors import InsufficientResource, InvalidRequest

pytestmark = pytest.mark.integration


def declares_services() -> bool:
    label = docker("image", "inspect", "-f",
                   '{{index .Config.Labels "ai.kernlet.service-ports"}}', IMAGE)
    return "jupyter" in label


@pytest.fixture
def small_pool_agent(halfstack: None, tmp_path: Path) -> Iterator[AgentProcess]:
    """An agent whose port pool holds only three ports."""
    agent = AgentProcess(tmp_path, f"ports-{uuid.uuid4().hex[:8]}")
    agent.config.write_text(agent.config.read_text().replace(
        "[container]\n", "[container]\nport-range = [31901, 31903]\n"))
    agent.start()
    yield agent
    agent.cleanup()


@pytest.fixture
async def pclient(small_pool_agent: AgentProcess) -> AsyncIterator[KernletClient]:
    async with KernletClient(NATS_URL, agent_id=small_pool_agent.agent_id, timeout=90) as c:
        yield c


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def test_services_reachable_then_stopped(
    pclient: KernletClient, small_pool_agent: AgentProcess
) -> None:
    if not declares_services():
        pytest.fail(f"{IMAGE} declares no services: rebuild it (kernlet image build python "
                    "--rebuild)")
    k = await pclient.create_kernel(IMAGE, mem=512 * 1024**2)
    try:
        ports = {p["name"]: p for p in k["service_ports"]}
        assert set(ports) == {"jupyter", "terminal"}
        assert all(31901 <= p["host_port"] <= 31903 for p in ports.values())
        published = docker("port", k["container_id"])
        assert all(line.split(" -> ")[1].startswith("127.0.0.1:")
                   for line in published.splitlines() if " -> " in line)

        await pclient.upload(k["id"], "hello.txt", b"hi")
        jup = await pclient.start_service(k["id"], "jupyter")
        base = f"http://127.0.0.1:{jup['host_port']}"
        status, body = await get(f"{base}/api/contents?token={jup['token']}")
        assert status == 200 and "hello.txt" in body
        status, _ = await get(f"{base}/api/contents")  # no token: refused
        assert status in (401, 403)
        again = await pclient.start_service(k["id"], "jupyter")  # already up: same one
        assert again["token"] == jup["token"]

        term = await pclient.start_service(k["id"], "terminal")
        status, _ = await get(term["url"])
        assert status == 200

        await pclient.shutdown_service(k["id"], "jupyter")
        with pytest.raises(aiohttp.ClientError):
            await get(f"{base}/api?token={jup['token']}")
        with pytest.raises(InvalidRequest):
            await pclient.shutdown_service(k["id"], "jupyter")
        with pytest.raises(InvalidRequest):
            await pclient.start_service(k["id"], "no-such-service")
    finally:
        await pclient.destroy_kernel(k["id"])


async def test_port_pool_exhaustion_is_clean(
    pclient: KernletClient, small_pool_agent: AgentProcess
) -> None:
    if not declares_services():
        pytest.fail(f"{IMAGE} declares no services: rebuild it")
    first = await pclient.create_kernel(IMAGE, mem=256 * 1024**2)  # 2 of the 3 ports
    try:
        with pytest.raises(InsufficientResource, match="port"):
            await pclient.create_kernel(IMAGE, mem=256 * 1024**2)
        assert set(small_pool_agent.scratch_dirs()) == {first["id"]}
        assert len(small_pool_agent.containers()) == 1
    finally:
        await pclient.destroy_kernel(first["id"])
    second = await pclient.create_kernel(IMAGE, mem=256 * 1024**2)  # the ports came back
    await pclient.destroy_kernel(second["id"])
