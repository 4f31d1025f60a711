"""A create's windows end to end: the kernel container gets the agent's create-timeout as the
runtime's start window, and a kernel whose runtime never comes up fails with an error naming
``agent.create-timeout`` and carrying the container's last output."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, no_leaks
from kernlet.client import KernletClient
from kernlet.errors import CreationFailed

pytestmark = pytest.mark.integration

#: long enough for a kernel of 0.5 cpu to boot on a loaded box; the failing create waits it out
CREATE_TIMEOUT = 30


@pytest.fixture(scope="module")
def agent(halfstack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path_factory.mktemp("agent"), f"test-{uuid.uuid4().hex[:8]}")
    text = proc.config.read_text()
    proc.config.write_text(text.replace("[agent]\n", f"[agent]\ncreate-timeout = {CREATE_TIMEOUT}\n", 1))
    proc.start()
    yield proc
    proc.cleanup()


@pytest.fixture
async def client(agent: AgentProcess) -> AsyncIterator[KernletClient]:
    async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=CREATE_TIMEOUT + 60) as c:
        yield c


async def test_the_runtime_gets_the_create_timeout(client: KernletClient) -> None:
    kernel = await client.create_kernel(IMAGE, cpu=0.5)
    try:
        res = await client.execute(
            kernel["id"], "import os; print(os.environ['KERNLET_START_TIMEOUT'])",
            flush_timeout=30,
        )
        out = "".join(str(item[1]) for item in res["console"] if item[0] == "stdout")
        assert float(out) == CREATE_TIMEOUT
    finally:
        await client.destroy_kernel(kernel["id"])


async def test_a_runtime_that_never_answers_names_the_key_and_shows_the_output(
    client: KernletClient, agent: AgentProcess
) -> None:
    """The container lives on, its runtime never starts: create-timeout runs out."""
    bootstrap = 'echo "kernlet-test: no runtime today" >&2\nexec sleep 600\n'
    with no_leaks(agent), pytest.raises(CreationFailed) as err:
        await client.create_kernel(IMAGE, bootstrap=bootstrap)
    msg = err.value.message
    assert f"not ready after {CREATE_TIMEOUT} s (agent.create-timeout)" in msg
    assert "its socket does not exist" in msg
    assert msg.endswith("the container's last output:\nkernlet-test: no runtime today")


async def test_a_container_that_exits_during_start_shows_its_output(
    client: KernletClient, agent: AgentProcess
) -> None:
    bootstrap = 'echo "kernlet-test: the bootstrap ends the container" >&2\nexit 3\n'
    with no_leaks(agent), pytest.raises(CreationFailed) as err:
        await client.create_kernel(IMAGE, bootstrap=bootstrap)
    msg = err.value.message
    assert "exit code 3" in msg
    assert msg.endswith("the container's last output:\n"
                        "kernlet-test: the bootstrap ends the container")
