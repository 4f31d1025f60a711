"""GPUs on this GPU-less node, for real: the agent refuses a cuda.device request with a typed
error naming the field and holds nothing; Docker gets the spec's device nodes and device
requests as built (a device node reaches the container; a GPU request without the NVIDIA
toolkit is refused by Docker, typed). The GPU path itself: tests/unit/test_gpu.py (NVML
stand-in) and scripts/gpu-check.sh (on a GPU machine)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from integration.conftest import IMAGE, AgentProcess, no_leaks
from integration.test_cli import cli
from kernlet.client import KernletClient
from kernlet.drivers.docker import ContainerSpec, DockerDriver
from kernlet.errors import DockerError, InsufficientResource, InvalidRequest, KernelNotFound

pytestmark = pytest.mark.integration


async def test_a_gpu_request_on_a_node_without_gpus(
    client: KernletClient, agent: AgentProcess
) -> None:
    hw = await client.gather_hwinfo()
    assert "cuda" not in hw["plugins"] and "cuda.device" not in hw["slots"]
    used = hw["slots"]
    kernel_id = f"gpu-{uuid.uuid4().hex[:8]}"
    with no_leaks(agent):
        with pytest.raises(InsufficientResource,
                           match=r"configs\.0\.slots\.cuda\.device .*this node has none"):
            await client.create_kernel(IMAGE, kernel_id=kernel_id, slots={"cuda.device": 1})
        for bad, match in (({"cuda.device": -1}, ">= 0"), ({"cuda.device": 0.5}, "multiple"),
                           ({"tpu.device": 1}, "unknown resource slot")):
            with pytest.raises(InvalidRequest, match=match):
                await client.create_kernel(IMAGE, kernel_id=kernel_id, slots=bad)
    # refused before the kernel existed: no stream in the log, nothing held, still serving
    with pytest.raises(KernelNotFound):
        await client.events(kernel_id)
    assert (await client.gather_hwinfo())["slots"] == used
    k = await client.create_kernel(IMAGE, kernel_id=kernel_id, slots={})
    await client.destroy_kernel(k["id"])


def test_the_cli_asks_for_slots(agent: AgentProcess) -> None:
    with no_leaks(agent):
        res = cli(agent, "kernel", "create", "--image", IMAGE, "--slot", "cuda.device=1")
    assert res.returncode == 73, res.stderr  # the kernel could not be created
    assert "InsufficientResource" in res.stderr and "slots.cuda.device" in res.stderr
    bad = cli(agent, "kernel", "create", "--image", IMAGE, "--slot", "cuda.device")
    assert bad.returncode == 2 and "NAME=AMOUNT" in bad.stderr


async def _exit_code(rt: DockerDriver, cid: str) -> int | None:
    for _ in range(300):
        info = await rt.inspect(cid)
        if not info.running:
            return info.exit_code
        await asyncio.sleep(0.1)
    raise AssertionError("the container did not exit")


async def test_docker_gets_device_nodes_and_gpu_requests(halfstack: None) -> None:
    if not Path("/dev/net/tun").exists():
        pytest.skip("no /dev/net/tun on this host to stand in for /dev/nvidia0")
    rt = DockerDriver()
    run = uuid.uuid4().hex[:8]
    made: list[str] = []

    def spec(role: str, devices: tuple[str, ...] = (),
             gpus: tuple[str, ...] = ()) -> ContainerSpec:
        return ContainerSpec(name=f"kernlet-gpu-test-{run}-{role}", image=IMAGE,
                             cmd=("test", "-c", "/dev/net/tun"),
                             labels={"ai.kernlet.test-run": run}, devices=devices, gpus=gpus)

    try:
        # a device node the container does not have by default, as /dev/nvidia0 is
        for role, devices, code in (("with", ("/dev/net/tun",), 0), ("without", (), 1)):
            cid = await rt.create(spec(role, devices=devices))
            made.append(cid)
            await rt.start(cid)
            assert await _exit_code(rt, cid) == code
        # a GPU request where Docker has no NVIDIA toolkit: refused, typed
        cid = await rt.create(spec("gpu", gpus=("0",)))
        made.append(cid)
        with pytest.raises(DockerError, match="device driver"):
            await rt.start(cid)
    finally:
        for cid in made:
            await rt.remove(cid)
        await rt.close()
