"""Disk and process limits and kept logs, on real kernels.

A kernel's scratch is its own filesystem (a 64 MiB tmpfs here, a loop-mounted ext4 image in the
hostdir test), never the event log's: filling it gets ENOSPC while the agent goes on creating
and recording other kernels. A fork bomb (bounded: 400 tries) stops at the pids limit and the
kernel is still destroyed. /dev/shm and the rlimits are what the config says. A terminated
kernel's last output is kept beside the event log and outlives an agent restart. A create while
the log's filesystem is under the free-space floor is refused with nothing held.
"""

from __future__ import annotations

import asyncio
import resource
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, no_leaks
from kernlet.client import KernletClient
from kernlet.errors import InsufficientResource, InvalidRequest, KernelNotFound

pytestmark = pytest.mark.integration

MiB = 1024**2
#: processes and threads a kernel may have (the runtime and its ipykernel take about 20)
PIDS = 96


def limits_agent(root: Path, container: str, agent: str = "") -> AgentProcess:
    proc = AgentProcess(root, f"lim-{uuid.uuid4().hex[:8]}")
    text = proc.config.read_text().replace("[container]\n", f"[container]\n{container}", 1)
    proc.config.write_text(text.replace("[agent]\n", f"[agent]\n{agent}", 1))
    return proc


@pytest.fixture(scope="module")
def agent(halfstack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    proc = limits_agent(tmp_path_factory.mktemp("limits"),
                        f'scratch-type = "tmpfs"\nscratch-size = "64m"\npids-limit = {PIDS}\n'
                        "port-range = [32400, 32449]\n")
    proc.start()
    yield proc
    proc.cleanup()


@pytest.fixture
async def client(agent: AgentProcess) -> AsyncIterator[KernletClient]:
    async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=120) as c:
        yield c


async def stdout(client: KernletClient, kernel_id: str, code: str) -> str:
    res = await client.execute(kernel_id, code)
    assert res["status"] == "finished", res
    return "".join(str(d) for k, d in res["console"] if k == "stdout").strip()


FILL = """
import errno
written, err = 0, None
try:
    with open('/home/work/fill', 'wb') as f:
        for _ in range(200):
            f.write(b'x' * 1024 * 1024)
            f.flush()
            written += 1
except OSError as exc:
    err = errno.errorcode.get(exc.errno)
print(written, err)
"""

PROBE = """
import os, resource
fs = {l.split()[4]: l.split(' - ')[1].split()[0] for l in open('/proc/self/mountinfo')}
st = os.statvfs('/home/work'); shm = os.statvfs('/dev/shm')
print(fs['/home/work'], st.f_blocks * st.f_frsize // 2**20, shm.f_blocks * shm.f_frsize // 2**20,
      resource.getrlimit(resource.RLIMIT_NOFILE)[1], resource.getrlimit(resource.RLIMIT_NPROC)[1])
"""


async def test_a_full_tmpfs_scratch_is_enospc_and_the_agent_goes_on(
        client: KernletClient, agent: AgentProcess) -> None:
    with no_leaks(agent):
        a = await client.create_kernel(IMAGE)
        work = agent.var_dir / "scratch" / a["id"] / "work"
        assert work.is_mount()
        assert work.stat().st_dev != (agent.var_dir / "log" / "events.sqlite").stat().st_dev
        fstype, size, shm, nofile, nproc = (await stdout(client, a["id"], PROBE)).split()
        assert (fstype, int(size), int(shm)) == ("tmpfs", 64, 64)
        hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        assert int(nofile) == min(512000, hard_nofile)
        assert int(nproc) == min(65536, resource.getrlimit(resource.RLIMIT_NPROC)[1])

        async def another() -> tuple[dict[str, object], str]:
            b = await client.create_kernel(IMAGE)
            return b, await stdout(client, b["id"], "print(6 * 7)")

        # B is created and run while A fills its scratch and after (the full file stays until
        # A removes it below), so whichever ends first, B's events are recorded meanwhile
        filled, (b, answer) = await asyncio.gather(stdout(client, a["id"], FILL), another())
        written, err = filled.split()
        assert err == "ENOSPC" and int(written) <= 64
        assert answer == "42"
        assert "kernel_started" in [e["type"] for e in await client.events(str(b["id"]))]
        # the full kernel still works: it frees its scratch and writes again (IPython, whose
        # history lives in $HOME = /home/work, may say first that it stopped saving it)
        out = await stdout(client, a["id"], "import os; os.remove('/home/work/fill'); "
                           "open('/home/work/f', 'w').write('ok'); print('ok')")
        assert out.splitlines()[-1] == "ok"
        for k in (a, b):
            await client.destroy_kernel(str(k["id"]))
        assert not work.exists()


async def test_a_fork_bomb_stops_at_the_pids_limit_and_the_kernel_is_destroyed(
        client: KernletClient, agent: AgentProcess) -> None:
    bomb = """
import subprocess
procs, err = [], None
for _ in range(400):
    try:
        procs.append(subprocess.Popen(['sleep', '600']))
    except OSError as exc:
        err = exc.errno
        break
print(len(procs), err)
"""
    with no_leaks(agent):
        k = await client.create_kernel(IMAGE)
        started, err = (await stdout(client, k["id"], bomb)).split()
        assert err == "11" and 0 < int(started) < PIDS  # EAGAIN from fork: the pids cgroup
        done = await client.destroy_kernel(k["id"])  # its sleeps still running
        assert done["reason"] == "user-requested"


async def test_shm_size_above_mem_is_refused_with_nothing_made(
        client: KernletClient, agent: AgentProcess) -> None:
    with no_leaks(agent), pytest.raises(InvalidRequest, match="shm_size above mem"):
        await client.create_kernel(IMAGE, mem=128 * MiB, shm_size=256 * MiB)


async def test_the_free_space_floor_refuses_a_create_with_nothing_held(
        halfstack: None, tmp_path: Path) -> None:
    proc = limits_agent(tmp_path, "port-range = [32450, 32459]\n", 'min-log-free = "1000t"\n')
    proc.start()
    try:
        async with KernletClient(NATS_URL, agent_id=proc.agent_id, timeout=60) as c:
            before = (await c.call("gather_hwinfo"))["slots"]
            with no_leaks(proc), pytest.raises(InsufficientResource,
                                               match=r"less than agent\.min-log-free"):
                await c.create_kernel(IMAGE, kernel_id="floor-refused")
            assert (await c.call("gather_hwinfo"))["slots"] == before
            with pytest.raises(KernelNotFound):
                await c.events("floor-refused")
    finally:
        proc.cleanup()


async def test_a_sized_hostdir_scratch_is_a_loop_image_of_that_size(
        halfstack: None, tmp_path: Path) -> None:
    proc = limits_agent(tmp_path, 'scratch-size = "64m"\nport-range = [32460, 32469]\n')
    proc.start()
    try:
        async with KernletClient(NATS_URL, agent_id=proc.agent_id, timeout=120) as c:
            with no_leaks(proc):
                k = await c.create_kernel(IMAGE)
                work = proc.var_dir / "scratch" / k["id"] / "work"
                assert work.is_mount()
                assert work.stat().st_dev != (proc.var_dir / "log").stat().st_dev
                fstype, size, *_ = (await stdout(c, k["id"], PROBE)).split()
                assert fstype == "ext4" and 50 < int(size) <= 64
                written, err = (await stdout(c, k["id"], FILL)).split()
                assert err == "ENOSPC" and int(written) <= 64
                await c.destroy_kernel(k["id"])
                assert not work.parent.exists()  # unmounted, image removed
    finally:
        proc.cleanup()


async def test_a_terminated_kernels_last_output_is_kept_across_an_agent_restart(
        client: KernletClient, agent: AgentProcess) -> None:
    """(Last in the module: it restarts the module's agent.)"""
    marker = f"kernlet-kept-{uuid.uuid4().hex[:8]}"
    k = await client.create_kernel(IMAGE, bootstrap=f'echo "{marker} from the bootstrap"\n')
    assert marker in await client.logs(k["id"])  # live: from Docker
    await client.destroy_kernel(k["id"])
    logs = await client.call("get_logs", kernel_id=k["id"])
    assert logs["kept"] and f"{marker} from the bootstrap" in logs["logs"]
    assert (agent.var_dir / "log" / "kernel-logs" / f"{k['id']}.log").is_file()
    agent.stop()
    agent.start()
    assert f"{marker} from the bootstrap" in await client.logs(k["id"], tail=5000)
    with pytest.raises(KernelNotFound):
        await client.logs("never-was-here")
