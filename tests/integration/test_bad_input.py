"""Bad input gets a typed error; the agent keeps serving and leaks nothing."""

from __future__ import annotations

import subprocess

import pytest

from integration.conftest import IMAGE, AgentProcess, no_leaks
from kernlet.client import KernletClient
from kernlet.errors import (
    ImageNotFound,
    InvalidRequest,
    KernelAlreadyExists,
    KernelNotFound,
    KernelNotRunning,
    UnknownCommand,
)

pytestmark = pytest.mark.integration


async def test_unknown_kernel(client: KernletClient, agent: AgentProcess) -> None:
    with no_leaks(agent):
        with pytest.raises(KernelNotFound):
            await client.execute("no-such-kernel", "print(1)")
        with pytest.raises(KernelNotFound):
            await client.destroy_kernel("no-such-kernel")
        with pytest.raises(KernelNotFound):
            await client.interrupt("no-such-kernel")
        with pytest.raises(KernelNotFound):
            await client.events("no-such-kernel")
    assert (await client.ping("still"))["msg"] == "still"


async def test_unknown_image(client: KernletClient, agent: AgentProcess) -> None:
    with no_leaks(agent), pytest.raises(ImageNotFound):
        await client.create_kernel("kernlet/does-not-exist:1")
    assert (await client.ping())["agent_id"] == agent.agent_id
    # the failed kernel is recorded terminated (failed-to-create), and nothing is live
    assert not [k for k in await client.list_kernels() if k["image"].startswith("kernlet/does")]


async def test_not_a_kernel_image(client: KernletClient, agent: AgentProcess) -> None:
    # an empty image without kernlet's labels
    subprocess.run("tar cf - --files-from /dev/null | docker import - kernlet-test/unlabelled:1",
                   shell=True, check=True, capture_output=True)
    with no_leaks(agent), pytest.raises(InvalidRequest, match="not a kernlet kernel image"):
        await client.create_kernel("kernlet-test/unlabelled:1")


@pytest.mark.parametrize(
    ("command", "payload", "error"),
    [
        ("create_kernels", b"\xc1\xc1 not msgpack", InvalidRequest),
        ("create_kernels", None, InvalidRequest),
        ("execute", "x" * (300 * 1024), InvalidRequest),
        ("execute", {"kernel_id": "k", "run_id": "r", "code": "x" * (200 * 1024)},
         InvalidRequest),
        ("execute", [1, 2, 3], InvalidRequest),
        ("no_such_command", {}, UnknownCommand),
    ],
)
async def test_malformed_requests(
    client: KernletClient, agent: AgentProcess, command: str, payload: object, error: type
) -> None:
    from kernlet.events import pack

    data = payload if isinstance(payload, bytes) else pack(payload)
    with no_leaks(agent), pytest.raises(error):
        await client.call_raw(command, data)
    assert (await client.ping())["msg"] == ""


@pytest.mark.parametrize(
    "args",
    [
        {"session_id": "s", "kernel_ids": ["k"], "configs": [{"image": IMAGE, "cpu": "two"}]},
        {"session_id": "s", "kernel_ids": ["k"], "configs": [{"image": 5}]},
        {"session_id": "s", "kernel_ids": ["a", "b"], "configs": [{"image": IMAGE}]},
        {"session_id": "s", "kernel_ids": ["../etc"], "configs": [{"image": IMAGE}]},
        {"session_id": "s", "kernel_ids": ["k"], "configs": [{"image": IMAGE, "bogus": 1}]},
        {"session_id": "s", "kernel_ids": ["k"], "configs": [{"image": IMAGE, "mem": -1}]},
    ],
)
async def test_wrong_types(client: KernletClient, agent: AgentProcess, args: dict) -> None:
    with no_leaks(agent), pytest.raises(InvalidRequest):
        await client.call("create_kernels", **args)


async def test_duplicate_kernel_id_and_terminated_kernel(
    client: KernletClient, agent: AgentProcess
) -> None:
    k = await client.create_kernel(IMAGE, kernel_id="dup-kernel")
    try:
        with no_leaks(agent), pytest.raises(KernelAlreadyExists):
            await client.create_kernel(IMAGE, kernel_id="dup-kernel")
        out = await client.execute(k["id"], "print('alive')")
        assert out["console"] == [["stdout", "alive\n"]]
    finally:
        await client.destroy_kernel(k["id"])
    with pytest.raises(KernelNotRunning):
        await client.execute(k["id"], "print(1)")
    with pytest.raises(KernelAlreadyExists):
        await client.create_kernel(IMAGE, kernel_id="dup-kernel")
    assert "dup-kernel" not in agent.scratch_dirs()


async def test_memory_below_the_smallest_kernel_is_refused(
    client: KernletClient, agent: AgentProcess
) -> None:
    before = len(await client.list_kernels(all=True))
    with no_leaks(agent), pytest.raises(InvalidRequest, match=r"container\.min-mem"):
        await client.create_kernel(IMAGE, mem=64 * 1024**2)
    assert len(await client.list_kernels(all=True)) == before  # nothing was even recorded
