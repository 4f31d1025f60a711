"""The rest of the manager protocol: logs, files, registry sync, batch jobs, exec timeouts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from integration.conftest import IMAGE, AgentProcess, docker, wait_for
from kernlet.client import EventSubscriber, KernletClient
from kernlet.errors import InsufficientResource, InvalidRequest, KernelNotFound

pytestmark = pytest.mark.integration


@pytest.fixture
async def kernel(client: KernletClient):  # type: ignore[no-untyped-def]
    k = await client.create_kernel(IMAGE, mem=256 * 1024**2)
    yield k
    try:
        await client.destroy_kernel(k["id"])
    except KernelNotFound:
        pass


async def test_logs(client: KernletClient, kernel: dict) -> None:
    logs = await client.logs(kernel["id"])
    assert "serving on /opt/kernlet/ipc/runtime.sock" in logs


async def test_file_round_trip_and_confinement(
    client: KernletClient, kernel: dict, agent: AgentProcess
) -> None:
    kid = kernel["id"]
    blob = os.urandom(1_300_000)  # larger than one NATS message: chunked both ways
    await client.upload(kid, "data/blob.bin", blob, chunk=128 * 1024)  # test agent: 256k cap
    assert await client.download(kid, "/home/work/data/blob.bin") == blob
    res = await client.execute(kid, "import os\nprint(os.path.getsize('data/blob.bin'), "
                                    "os.stat('data/blob.bin').st_uid)")
    assert res["console"] == [["stdout", f"{len(blob)} 1000\n"]]
    listing = await client.list_files(kid, "data")
    assert [(f["name"], f["size"]) for f in listing["files"]] == [("blob.bin", len(blob))]
    for bad in ("../../../etc/passwd", "/etc/passwd", "data/../../x"):
        with pytest.raises(InvalidRequest):
            await client.download(kid, bad)
        with pytest.raises(InvalidRequest):
            await client.upload(kid, bad, b"x")
    # a symlink planted by user code cannot lead outside either
    await client.execute(kid, "import os\nos.symlink('/etc', 'escape')")
    with pytest.raises(InvalidRequest):
        await client.download(kid, "escape/passwd")
    with pytest.raises(InvalidRequest):
        await client.upload(kid, "escape/evil", b"x")
    assert not Path("/etc/evil").exists()


async def test_sync_kernel_registry_both_directions(
    client: KernletClient, agent: AgentProcess
) -> None:
    a = await client.create_kernel(IMAGE, mem=256 * 1024**2)
    b = await client.create_kernel(IMAGE, mem=256 * 1024**2)
    res = await client.sync_kernel_registry([a["id"], "ghost-kernel"])
    assert b["id"] in res["destroyed"]
    assert {"id": "ghost-kernel", "reason": "unknown-kernel"} in res["terminated"]

    async def b_gone() -> bool:
        return b["id"] not in {k["id"] for k in await client.list_kernels()}

    await wait_for(b_gone)
    events = await client.events(b["id"])
    assert events[-1]["payload"]["reason"] == "not-found-in-manager"
    assert (await client.execute(a["id"], "print('a lives')"))["console"] == [
        ["stdout", "a lives\n"]]
    await client.destroy_kernel(a["id"])


async def test_batch_job_ends_with_session_events(
    client: KernletClient, kernel: dict, agent: AgentProcess
) -> None:
    sub = await EventSubscriber(client.nc, agent_id=agent.agent_id).start()
    ok = await client.trigger_batch(kernel["id"], "echo done > out.txt")
    ev = await sub.until(lambda e: e["type"].startswith("session_")
                         and e["payload"]["run_id"] == ok)
    assert ev["type"] == "session_success"
    bad = await client.trigger_batch(kernel["id"], "exit 3")
    ev = await sub.until(lambda e: e["type"].startswith("session_")
                         and e["payload"]["run_id"] == bad)
    assert ev["type"] == "session_failure"
    assert ev["payload"] == {"run_id": bad, "reason": "task-failed", "exit_code": 3}
    await sub.stop()
    assert await client.download(kernel["id"], "out.txt") == b"done\n"


async def test_exec_timeout_interrupts_and_keeps_the_kernel(
    client: KernletClient, kernel: dict, agent: AgentProcess
) -> None:
    kid = kernel["id"]
    await client.execute(kid, "kept = 'yes'")
    res = await client.execute(kid, "import time\ntime.sleep(60)", timeout=1.0)
    assert res["status"] == "exec-timeout"

    async def recorded() -> bool:
        return "execution_timeout" in [e["type"] for e in await client.events(kid)]

    await wait_for(recorded, timeout=10)
    out = await client.execute(kid, "print(kept)")
    assert out["console"] == [["stdout", "yes\n"]]


async def test_allocation_limits_and_insufficient_resource(
    client: KernletClient, agent: AgentProcess
) -> None:
    hw = await client.call("gather_hwinfo")
    assert {"cpu", "mem"} <= set(hw["plugins"]) and "cuda" not in hw["slots"]
    cores = int(float(hw["slots"]["cpu"]["capacity"]))
    k = await client.create_kernel(IMAGE, cpu=1, mem=300 * 1024**2)
    try:
        cpuset, shares, nano, mem, swap = docker(
            "inspect", "-f", "{{.HostConfig.CpusetCpus}} {{.HostConfig.CpuShares}} "
            "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}",
            k["container_id"]).split()
        assert len(cpuset.split(",")) == 1 and 0 <= int(cpuset) < cores
        # the cpu is a guarantee (shares); no quota by default (container.cpu-limit)
        assert (shares, nano) == ("1024", "0")
        assert (mem, swap) == (str(300 * 1024**2), str(300 * 1024**2))
        used = (await client.call("gather_hwinfo"))["slots"]
        assert float(used["cpu"]["used"]) >= 1 and int(used["mem"]["used"]) >= 300 * 1024**2
        # more cores than the node has: refused, naming the slot, nothing held
        with pytest.raises(InsufficientResource, match="cpu"):
            await client.create_kernel(IMAGE, cpu=cores + 1)
        with pytest.raises(InsufficientResource, match="mem"):
            await client.create_kernel(IMAGE, mem=10**15)
        after = (await client.call("gather_hwinfo"))["slots"]
        assert after == used
    finally:
        await client.destroy_kernel(k["id"])
    freed = (await client.call("gather_hwinfo"))["slots"]
    assert float(freed["cpu"]["used"]) < float(used["cpu"]["used"])
