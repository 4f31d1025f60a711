"""Disk and process limits and kept logs, as logic: the spec and the HostConfig Docker is sent
(/dev/shm, rlimits clamped to the host's), the create's refusals (shm above mem, the log's
free-space floor) with nothing held, the scratch mounts themselves (real tmpfs and loop mounts:
root only), and the kept output of a terminated kernel that get_logs answers from."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from life_rig import IMAGE, Rig
from test_cpu_limit import host_config

from kernlet.actors import kept_logs
from kernlet.actors.commands import check_log_space
from kernlet.actors.steps import container_spec, kernel_dirs, ulimits
from kernlet.config import AgentConfig
from kernlet.drivers import scratch
from kernlet.errors import InsufficientResource, InvalidRequest, KernelNotFound
from kernlet.events import KernelState, State
from kernlet.protocol import CreateKernels, DestroyKernel, GetLogs

MiB = 1024**2


def config(tmp_path: Path, **container: Any) -> AgentConfig:
    return AgentConfig.model_validate({"agent": {"var-dir": str(tmp_path)},
                                       "container": container})


def state(**kconfig: Any) -> KernelState:
    return KernelState(kernel_id="k1", state=State.CREATING, seq=1, session_id="s",
                       image="img", slots={"cpu": "1", "mem": str(256 * MiB)}, config=kconfig)


# -- the container spec ----------------------------------------------------------------------


async def test_docker_gets_the_shm_size_and_the_rlimits(tmp_path: Path) -> None:
    cfg = config(tmp_path, **{"ulimit-nofile": 1000, "ulimit-nproc": 500})
    hc = await host_config(container_spec(cfg, state(), kernel_dirs(cfg, "k1"), {}))
    assert hc["ShmSize"] == 64 * MiB
    assert hc["Ulimits"] == [{"Name": "nofile", "Soft": 1000, "Hard": 1000},
                             {"Name": "nproc", "Soft": 500, "Hard": 500}]
    spec = container_spec(cfg, state(shm_size=128 * MiB), kernel_dirs(cfg, "k1"), {})
    assert spec.shm_size == 128 * MiB  # the kernel's own


def test_rlimits_above_the_hosts_hard_limits_are_clamped_and_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hard = {resource.RLIMIT_NOFILE: 20000, resource.RLIMIT_NPROC: resource.RLIM_INFINITY}
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, hard[which]))
    limits, notes = ulimits(config(tmp_path))
    assert limits == {"nofile": 20000, "nproc": 65536}
    assert len(notes) == 1 and "container.ulimit-nofile = 512000" in notes[0]
    assert "kernels get 20000" in notes[0]


# -- the create's refusals -------------------------------------------------------------------


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def create(kernel_id: str, **kconfig: Any) -> CreateKernels:
    return CreateKernels.model_validate({"session_id": "s1", "kernel_ids": [kernel_id],
                                         "configs": [{"image": IMAGE, "cpu": 0.5, **kconfig}]})


def test_shm_above_mem_is_refused_with_nothing_made(rig: Rig) -> None:
    with pytest.raises(InvalidRequest, match=r"\['k1'\]: shm_size above mem") as err:
        rig.call(create("k1", mem=128 * MiB, shm_size=129 * MiB))
    assert "container.shm-size = 64 MiB" in err.value.message
    rig.call(create("k2", mem=128 * MiB))  # the default 64 MiB fits
    assert rig.events("k1") == [] and rig.containers("k1") == [] and rig.dirs("k1") == []


def test_the_free_space_floor(tmp_path: Path) -> None:
    free = scratch.free_bytes(tmp_path)
    check_log_space(AgentConfig.model_validate(
        {"agent": {"var-dir": str(tmp_path), "min-log-free": 0}}))
    check_log_space(AgentConfig.model_validate(
        {"agent": {"var-dir": str(tmp_path), "min-log-free": max(free // 2, 1)}}))
    with pytest.raises(InsufficientResource, match=r"less than agent\.min-log-free"):
        check_log_space(AgentConfig.model_validate(
            {"agent": {"var-dir": str(tmp_path), "min-log-free": free * 2 + MiB}}))


# -- kept logs -------------------------------------------------------------------------------


class Logs:
    def __init__(self, text: str) -> None:
        self.text, self.tails = text, []

    async def logs(self, container_id: str, tail: int = 1000) -> str:
        self.tails.append(tail)
        return "".join(self.text.splitlines(keepends=True)[-tail:])


async def test_the_tail_is_the_last_bytes_cut_at_a_line() -> None:
    many = Logs("".join(f"line {i}\n" for i in range(100_000)))
    text = await kept_logs.tail_bytes(many, "c", 4096)
    assert len(text.encode()) <= 4096 and text.startswith("line ")
    assert text.endswith("line 99999\n")
    assert many.tails == [2048]  # 2048 lines were enough
    short = Logs("".join("x\n" for _ in range(100_000)))
    text = await kept_logs.tail_bytes(short, "c", 64 * 1024)
    assert text == "x\n" * 32768 and short.tails == [2048, 8192, 32768]
    assert await kept_logs.tail_bytes(Logs("a\nb\n"), "c", 4096) == "a\nb\n"


def test_a_terminated_kernels_output_is_kept_and_answered(rig: Rig) -> None:
    res = rig.call(create("k1"))["kernels"][0]
    rig.docker.containers[res["container_id"]].output = "booting\nthe last words\n"
    assert rig.call(GetLogs(kernel_id="k1"))["logs"].endswith("the last words\n")  # Docker
    rig.call(DestroyKernel(kernel_id="k1"))
    path = rig.cfg.kept_logs_dir / "k1.log"
    assert path.read_text() == "booting\nthe last words\n"
    assert rig.call(GetLogs(kernel_id="k1", tail=1)) == {"logs": "the last words\n",
                                                         "kept": True}
    path.unlink()
    with pytest.raises(Exception, match="has terminated"):
        rig.call(GetLogs(kernel_id="k1"))
    with pytest.raises(KernelNotFound):
        rig.call(GetLogs(kernel_id="nobody"))


async def test_keeping_never_raises(tmp_path: Path) -> None:
    class Broken:
        async def logs(self, container_id: str, tail: int = 1000) -> str:
            raise OSError("engine gone")

    cfg = config(tmp_path)
    await kept_logs.keep(cfg, Broken(), "k1", "c")
    assert not kept_logs.kept_path(cfg, "k1").exists()
    await kept_logs.keep(config(tmp_path, **{"keep-logs": 0}), Logs("x\n"), "k1", "c")
    assert not kept_logs.kept_path(cfg, "k1").exists()


# -- the scratch mounts (real mounts) --------------------------------------------------------

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


@root_only
@pytest.mark.parametrize(("kind", "fstype"), [("tmpfs", "tmpfs"), ("hostdir", "ext4")])
async def test_a_sized_scratch_is_its_own_filesystem_of_that_size(
        tmp_path: Path, kind: str, fstype: str) -> None:
    if kind == "hostdir" and shutil.which("mkfs.ext4") is None:
        pytest.skip("no mkfs.ext4")
    work = tmp_path / "k1" / "work"
    work.mkdir(parents=True)
    try:
        await asyncio.to_thread(scratch.mount, work, kind, 32 * MiB, 1000, 1000)
        await asyncio.to_thread(scratch.mount, work, kind, 32 * MiB, 1000, 1000)  # twice: ok
        assert work.is_mount() and work.stat().st_dev != tmp_path.stat().st_dev
        assert (work.stat().st_uid, work.stat().st_gid) == (1000, 1000)
        assert list(work.iterdir()) == []  # no lost+found
        mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
        assert [m[2] for m in mounts if m[1] == str(work)] == [fstype]
        st = os.statvfs(work)
        assert 24 * MiB < st.f_blocks * st.f_frsize <= 32 * MiB
    finally:
        scratch.unmount(work)
    scratch.unmount(work)  # twice: ok
    assert not work.is_mount()


def test_a_plain_hostdir_is_not_mounted(tmp_path: Path) -> None:
    scratch.mount(tmp_path, "hostdir", 0, 1000, 1000)
    assert not tmp_path.is_mount()


@root_only
def test_a_crash_mid_creation_unmounts_the_scratch_on_rollback(tmp_path: Path) -> None:
    """The tmpfs is mounted before kernel_creating; a crash right after it leaves the mount,
    and the rollback after the restart unmounts it before removing the dirs."""
    import pykka

    rig = Rig(tmp_path)
    try:
        pykka.ActorRegistry.stop_all()
        rig.cfg = AgentConfig.model_validate({
            "agent": {"id": "rig", "var-dir": str(tmp_path / "var")},
            "container": {"stop-grace": 0.1, "default-cpu": 0.5, "scratch-type": "tmpfs",
                          "scratch-size": "16m"}})
        rig.agent = rig._start_agent(rig.store, {})
        work = kernel_dirs(rig.cfg, "k1").work
        rig.crash_after("kernel_creating")
        rig.submit(create("k1"))
        rig.wait(rig.store.crashed.is_set)
        assert work.is_mount()
        store = rig.restart_agent()
        rig.wait(lambda: rig.events("k1", store)[-1:] == ["kernel_terminated"])
        assert not work.is_mount() and rig.dirs("k1") == []
    finally:
        scratch.unmount(kernel_dirs(rig.cfg, "k1").work)
        rig.close()
