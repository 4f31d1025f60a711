"""GPUs on this GPU-less node, for real: the agent refuses a cuda.device request with a typed
error naming the field and holds nothing; Docker gets the spec's device nodes and device
requests as built (a device node reaches the container; a GPU request without the NVIDIA
toolkit is refused by Docker, typed); and a real agent whose NVML is a stand-in module
(``pynvml`` first on its PYTHONPATH) with ``cuda-access = "toolkit"`` forced: it advertises
the GPU, records the allocation, gives Docker the DeviceRequest, and when Docker refuses it
(no toolkit here) rolls everything back; with ``cuda-access = "device-nodes"`` and no
/dev/nvidiactl here, the same agent advertises no GPU at all. The GPU path itself: tests/unit/test_gpu.py and
scripts/gpu-check.sh (on a GPU machine)."""

from __future__ import annotations

import asyncio
import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, no_leaks
from integration.test_cli import cli
from kernlet.client import KernletClient
from kernlet.drivers.docker import ContainerSpec, DockerDriver
from kernlet.errors import (
    CreationFailed,
    DockerError,
    InsufficientResource,
    InvalidRequest,
    KernelNotFound,
)

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
        with pytest.raises(DockerError,
                           match=r"device driver \"nvidia\" with capabilities: \[\[gpu\]\]"):
            await rt.start(cid)
    finally:
        for cid in made:
            await rt.remove(cid)
        await rt.close()


#: pynvml as the agent process imports it: one H200, index 0
PYNVML = textwrap.dedent('''
    class NVMLError(Exception):
        pass
    class _Mem:
        total = 141 * 1024**3
    def nvmlInit(): pass
    def nvmlShutdown(): pass
    def nvmlDeviceGetCount(): return 1
    def nvmlDeviceGetHandleByIndex(i): return i
    def nvmlDeviceGetName(h): return b"NVIDIA H200 (stand-in)"
    def nvmlDeviceGetUUID(h): return "GPU-stand-in-%d" % h
    def nvmlDeviceGetMemoryInfo(h): return _Mem()
    def nvmlDeviceGetCudaComputeCapability(h): return (9, 0)
    def nvmlDeviceGetMinorNumber(h): return h
    def nvmlSystemGetDriverVersion(): return "560.35"
''')


@pytest.fixture(params=["toolkit"])
def gpu_agent(request: pytest.FixtureRequest, halfstack: None, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentProcess]:
    """A real agent whose NVML sees one stand-in GPU; ``cuda-access`` = the param."""
    stub = tmp_path / "nvml"
    stub.mkdir()
    (stub / "pynvml.py").write_text(PYNVML)
    monkeypatch.setenv("PYTHONPATH", f"{stub}:{os.environ.get('PYTHONPATH', '')}")
    proc = AgentProcess(tmp_path, f"test-gpu-{uuid.uuid4().hex[:8]}",
                        f'[resource]\ncuda-access = "{request.param}"\n')
    text = proc.config.read_text()
    proc.config.write_text(text.replace("[container]\n",
                                        "[container]\nport-range = [32300, 32399]\n", 1))
    proc.start()
    yield proc
    proc.cleanup()


async def test_a_stand_in_gpu_through_the_real_agent(gpu_agent: AgentProcess) -> None:
    async with KernletClient(NATS_URL, agent_id=gpu_agent.agent_id, timeout=90) as c:
        hw = await c.gather_hwinfo()
        assert hw["slots"]["cuda.device"]["capacity"] == "1"
        assert hw["plugins"]["cuda"]["access"]["mode"] == "toolkit"
        assert hw["plugins"]["cuda"]["devices"][0]["uuid"] == "GPU-stand-in-0"
        kernel_id = f"gpu-{uuid.uuid4().hex[:8]}"
        # Docker is asked for the GPU and, without the NVIDIA toolkit, refuses at start
        with no_leaks(gpu_agent), pytest.raises(CreationFailed, match="device driver \"nvidia\""):
            await c.create_kernel(IMAGE, kernel_id=kernel_id, slots={"cuda.device": 1})
        events = await c.events(kernel_id)
        (creating,) = [e for e in events if e["type"] == "kernel_creating"]
        assert creating["payload"]["devices"] == {"cuda.device": {"0": "1"}}
        assert events[-1]["type"] == "kernel_terminated"
        assert events[-1]["payload"]["reason"] == "failed-to-create"
        assert (await c.gather_hwinfo())["slots"]["cuda.device"]["used"] == "0"
        # over the node's one GPU: refused up front
        with pytest.raises(InsufficientResource, match="has 1 in all"):
            await c.create_kernel(IMAGE, slots={"cuda.device": 2})


@pytest.mark.parametrize("gpu_agent", ["device-nodes"], indirect=True)
async def test_a_gpu_the_node_cannot_give_is_not_advertised(gpu_agent: AgentProcess) -> None:
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this host has NVIDIA device nodes")
    # NVML (the stand-in) sees a GPU, but there is no toolkit and no /dev/nvidiactl here
    assert "no cuda slot advertised" in gpu_agent.log.read_text()
    async with KernletClient(NATS_URL, agent_id=gpu_agent.agent_id, timeout=90) as c:
        hw = await c.gather_hwinfo()
        assert "cuda" not in hw["plugins"] and "cuda.device" not in hw["slots"]
        with no_leaks(gpu_agent), pytest.raises(InsufficientResource, match="has none"):
            await c.create_kernel(IMAGE, slots={"cuda.device": 1})
