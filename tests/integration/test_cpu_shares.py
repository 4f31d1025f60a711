"""A kernel's cpu request end to end: Docker gets CPU shares for it and, by default
(``container.cpu-limit = "none"``), no quota, so a kernel of 0.02 cpu boots at full speed on
an idle core; with ``cpu-limit = "request"`` its quota is the request (NanoCpus = 0.02e9)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, docker, no_leaks, wait_for
from kernlet.client import KernletClient
from kernlet.errors import KernletError

pytestmark = pytest.mark.integration

#: a kernel of 0.02 cpu on a busy two-core box: its boot may take this long
CREATE_TIMEOUT = 120
INSPECT = ("{{.HostConfig.CpuShares}} {{.HostConfig.NanoCpus}} {{.HostConfig.CpuQuota}} "
           "{{.HostConfig.CpusetCpus}}")


def make_agent(root: Path, cpu_limit: str | None) -> AgentProcess:
    proc = AgentProcess(root, f"cpu-{uuid.uuid4().hex[:8]}")
    text = proc.config.read_text().replace(
        "[agent]\n", f"[agent]\ncreate-timeout = {CREATE_TIMEOUT}\n", 1)
    if cpu_limit is not None:
        text = text.replace("[container]\n", f'[container]\ncpu-limit = "{cpu_limit}"\n', 1)
    proc.config.write_text(text)
    return proc


@pytest.fixture
def default_agent(halfstack: None, tmp_path: Path) -> Iterator[AgentProcess]:
    proc = make_agent(tmp_path, None)
    proc.start()
    yield proc
    proc.cleanup()


@pytest.fixture
def request_agent(halfstack: None, tmp_path: Path) -> Iterator[AgentProcess]:
    proc = make_agent(tmp_path, "request")
    proc.start()
    yield proc
    proc.cleanup()


@contextlib.asynccontextmanager
async def client_of(agent: AgentProcess) -> AsyncIterator[KernletClient]:
    async with KernletClient(NATS_URL, agent_id=agent.agent_id,
                             timeout=CREATE_TIMEOUT + 60) as c:
        yield c


def inspect(container_id: str) -> tuple[int, int, int, str]:
    shares, nano, quota, cpuset = docker("inspect", "-f", INSPECT, container_id).split()
    return int(shares), int(nano), int(quota), cpuset


async def test_by_default_a_small_kernel_gets_shares_and_no_quota(
    default_agent: AgentProcess
) -> None:
    async with client_of(default_agent) as client:
        kernel = await client.create_kernel(IMAGE, cpu=0.02)
        try:
            shares, nano, quota, cpuset = inspect(kernel["container_id"])
            assert shares == round(0.02 * 1024)
            assert (nano, quota) == (0, 0)
            assert len(cpuset.split(",")) == 1
            res = await client.execute(kernel["id"], "print(6 * 7)")
            assert res["console"] == [["stdout", "42\n"]]
        finally:
            await client.destroy_kernel(kernel["id"])


async def test_cpu_limit_request_sets_the_quota_to_the_request(
    request_agent: AgentProcess
) -> None:
    """Only the container's settings are checked: it is inspected while the kernel boots
    (at 2 % of a core, that boot may take long), then the kernel is destroyed."""
    async with client_of(request_agent) as client:
        kernel_id = uuid.uuid4().hex[:16]
        with no_leaks(request_agent):
            create = asyncio.create_task(client.create_kernel(IMAGE, cpu=0.02,
                                                              kernel_id=kernel_id))
            try:
                (cid,) = await wait_for(request_agent.containers, timeout=60)
                shares, nano, _, cpuset = inspect(cid)
                assert shares == round(0.02 * 1024)
                assert nano == 20_000_000  # 0.02e9
                assert len(cpuset.split(",")) == 1
            finally:
                await client.destroy_kernel(kernel_id)
                with contextlib.suppress(KernletError):
                    await create
