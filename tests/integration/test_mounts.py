"""Storage mounts and the kernel's environment on the real halfstack: data written through a
rw mount outlives the kernel and reaches the next one; a ro mount cannot be written; every bad
mount is refused with nothing left; a mount survives an agent restart (recovery) and a kernel
restart; the thread hints, ids, facts file and kernlet.helpers inside a kernel."""

from __future__ import annotations

import json
import os
import signal
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, docker, no_leaks, wait_for
from kernlet.client import KernletClient
from kernlet.errors import InvalidMount, KernelNotFound

pytestmark = pytest.mark.integration

UID = 1000  # the agent's default container.kernel-uid


def storage(root: Path) -> Path:
    vf = root / "vf"
    (vf / "alice" / "data").mkdir(parents=True)
    (vf / "alice" / "file.txt").write_text("not a dir")
    (vf / "alice" / "out").symlink_to("/etc")
    (vf / "alice" / "in").symlink_to(vf / "alice" / "data")
    for p in (vf / "alice", vf / "alice" / "data"):
        os.chown(p, UID, UID)
    return vf


def make_agent(root: Path, prefix: str, ports: str) -> AgentProcess:
    vf = storage(root)
    proc = AgentProcess(root, f"{prefix}-{uuid.uuid4().hex[:8]}",
                        extra=f'[storage]\nroots = {{ vf = "{vf}" }}\n')
    proc.config.write_text(proc.config.read_text().replace(
        "[container]\n", f"[container]\nport-range = {ports}\n", 1))
    return proc


@pytest.fixture(scope="module")
def magent(halfstack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    proc = make_agent(tmp_path_factory.mktemp("mounts"), "mnt", "[32000, 32099]")
    proc.start()
    yield proc
    proc.cleanup()


@pytest.fixture
async def mclient(magent: AgentProcess) -> AsyncIterator[KernletClient]:
    async with KernletClient(NATS_URL, agent_id=magent.agent_id, timeout=90) as c:
        yield c


def mount(source: str, target: str = "/home/work/data", mode: str = "rw") -> dict[str, str]:
    return {"source": source, "target": target, "mode": mode}


async def out(client: KernletClient, kernel_id: str, code: str) -> str:
    res = await client.execute(kernel_id, code)
    return "".join(d for k, d in res["console"] if k in ("stdout", "stderr"))


def pinned(agent: AgentProcess, kernel_id: str) -> list[str]:
    """What is left of a kernel's pins: staging points on disk and mounts in mountinfo."""
    base = agent.var_dir / "mounts" / kernel_id
    left = [str(p) for p in base.rglob("*")] if base.exists() else []
    return left + [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                   if f" {base}" in line]


async def test_rw_data_outlives_the_kernel_and_a_ro_mount_cannot_be_written(
        mclient: KernletClient, magent: AgentProcess) -> None:
    vf = magent.root / "vf"
    with no_leaks(magent):
        k1 = await mclient.create_kernel(IMAGE, mounts=[mount("vf:alice/data")])
        got = await out(mclient, k1["id"], "open('/home/work/data/result.txt', 'w')"
                                           ".write('made by k1'); print('ok')")
        assert got == "ok\n"
        await mclient.destroy_kernel(k1["id"])
        assert pinned(magent, k1["id"]) == []
        assert (vf / "alice" / "data" / "result.txt").read_text() == "made by k1"

        k2 = await mclient.create_kernel(IMAGE, mounts=[
            mount("vf:alice/data", "/home/work/in", "ro"),
            mount("vf:alice", "/home/work/sub/all", "rw")])
        assert await out(mclient, k2["id"], "print(open('/home/work/in/result.txt').read())"
                         ) == "made by k1\n"
        code = ("try:\n    open('/home/work/in/x', 'w')\nexcept OSError as e:\n"
                "    print(type(e).__name__, e.errno)\n")
        assert await out(mclient, k2["id"], code) == "OSError 30\n"  # EROFS
        assert await out(mclient, k2["id"],
                         "import os; print(sorted(os.listdir('/home/work/sub/all')))"
                         ) == "['data', 'file.txt', 'in', 'out']\n"
        await mclient.destroy_kernel(k2["id"])
        assert not (vf / "alice" / "data" / "x").exists()
        assert pinned(magent, k2["id"]) == []
        assert not (magent.var_dir / "config" / k2["id"]).exists()


BAD = [
    (mount("nope:alice"), "configs[0].mounts[0].source: unknown storage root 'nope'"),
    (mount("vf:alice/../.."), "configs[0].mounts[0].source: 'alice/../..' may not contain"),
    (mount("vf:/etc"), "configs[0].mounts[0].source: '/etc' must be a relative path"),
    (mount("vf:alice/out"), "configs[0].mounts[0].source: vf:alice/out is a symlink"),
    (mount("vf:alice/out/ssl"), "configs[0].mounts[0].source: vf:alice/out is a symlink"),
    (mount("vf:alice/in"), "configs[0].mounts[0].source: vf:alice/in is a symlink"),
    (mount("vf:alice/file.txt"), "configs[0].mounts[0].source: vf:alice/file.txt is a symlink "
                                 "or not a directory"),
    (mount("vf:alice/missing"), "configs[0].mounts[0].source: missing source"),
    (mount("vf:alice", "/home/work"), "configs[0].mounts[0].target: '/home/work' must be under"),
    (mount("vf:alice", "/etc"), "configs[0].mounts[0].target: '/etc' must be under"),
    (mount("vf:alice", "/home/work/../../usr/lib"), "configs[0].mounts[0].target:"),
]


async def test_every_bad_mount_is_refused_with_nothing_left(
        mclient: KernletClient, magent: AgentProcess) -> None:
    cases: list[tuple[list[dict[str, str]], str]] = [([m], why) for m, why in BAD]
    cases.append(([mount("vf:alice/data", "/home/work/d"), mount("vf:alice", "/home/work/d/")],
                  "configs[0].mounts[1].target: '/home/work/d' is also the target of mount 0"))
    with no_leaks(magent):
        for mounts, why in cases:
            kid = f"bad-{uuid.uuid4().hex[:8]}"
            with pytest.raises(InvalidMount) as err:
                await mclient.create_kernel(IMAGE, kernel_id=kid, mounts=mounts)
            assert err.value.message.startswith(why), (mounts, err.value.message)
            with pytest.raises(KernelNotFound):  # not even kernel_preparing was recorded
                await mclient.events(kid)
            assert not (magent.var_dir / "config" / kid).exists() and pinned(magent, kid) == []
        # a batch with one bad kernel creates none of them
        with pytest.raises(Exception, match=r"configs\[1\]\.mounts\[0\]\.source"):
            await mclient.call("create_kernels", session_id="s-bad", kernel_ids=["b1", "b2"],
                               configs=[{"image": IMAGE}, {"image": IMAGE,
                                                          "mounts": [mount("nope:x")]}])
        for kid in ("b1", "b2"):
            with pytest.raises(KernelNotFound):
                await mclient.events(kid)
    slots = (await mclient.gather_hwinfo())["slots"]
    assert all(float(s["used"]) == 0 for s in slots.values())
    assert (await mclient.ping("still here"))["msg"] == "still here"


async def test_env_facts_and_helpers_inside_a_kernel(mclient: KernletClient) -> None:
    k = await mclient.create_kernel(IMAGE, cpu=1.5, kernel_id=f"env-{uuid.uuid4().hex[:6]}",
                                    mounts=[mount("vf:alice/data", mode="ro")])
    try:
        code = ("import os, json\n"
                "print([os.environ[k] for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'NPROC',"
                " 'KERNLET_KERNEL_ID', 'KERNLET_SESSION_ID')])\n"
                "print(json.load(open('/home/config/kernel.json'))['slots']['cpu'])\n"
                "from kernlet import helpers\n"
                "print(helpers.kernel_id(), helpers.cpu_count(), helpers.slots()['cpu'],"
                " helpers.mounts(), helpers.devices())\n"
                "try:\n    open('/home/config/x', 'w')\nexcept OSError as e:\n    print(e.errno)\n")
        lines = (await out(mclient, k["id"], code)).splitlines()
        kid = k["id"]
        assert lines[0] == str(["2", "2", "2", kid, kid])  # session id = first kernel's id
        assert lines[1] == "1.5"
        assert lines[2] == (f"{kid} 2 1.5 [{{'mode': 'ro', 'source': 'vf:alice/data', "
                            "'target': '/home/work/data'}] {}")
        assert lines[3] == "30"  # the config dir is read-only
    finally:
        await mclient.destroy_kernel(k["id"])


def wheel(path: Path) -> bytes:
    """A one-module wheel, made here (no network)."""
    name = "kernlet_demo_pkg-1.0-py3-none-any.whl"
    files = {"kernlet_demo_pkg.py": "ANSWER = 42\n",
             "kernlet_demo_pkg-1.0.dist-info/METADATA":
                 "Metadata-Version: 2.1\nName: kernlet-demo-pkg\nVersion: 1.0\n",
             "kernlet_demo_pkg-1.0.dist-info/WHEEL":
                 "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files["kernlet_demo_pkg-1.0.dist-info/RECORD"] = "".join(f"{f},,\n" for f in files) + \
        "kernlet_demo_pkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path / name, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
    return (path / name).read_bytes()


async def test_helpers_install_into_the_user_site_with_the_images_pip(
        mclient: KernletClient, tmp_path: Path) -> None:
    k = await mclient.create_kernel(IMAGE)  # kernlet's python image has Debian's pip
    try:
        await mclient.upload(k["id"], "wheels/kernlet_demo_pkg-1.0-py3-none-any.whl",
                             wheel(tmp_path))
        code = ("from kernlet import helpers\n"
                "helpers.install('kernlet-demo-pkg', find_links='/home/work/wheels', "
                "no_index=True)\n"
                "import kernlet_demo_pkg, site\n"
                "print(kernlet_demo_pkg.ANSWER, kernlet_demo_pkg.__file__.startswith("
                "site.getusersitepackages()))\n"
                "try:\n    helpers.install('no-such-pkg', no_index=True)\n"
                "except helpers.HelperError as e:\n    print(str(e).splitlines()[0])\n")
        assert (await out(mclient, k["id"], code)).splitlines() == [
            "42 True", "pip install no-such-pkg failed (exit 1):"]
    finally:
        await mclient.destroy_kernel(k["id"])


@pytest.fixture
def ragent(halfstack: None, tmp_path: Path) -> Iterator[AgentProcess]:
    proc = make_agent(tmp_path, "mntrec", "[32100, 32199]")
    proc.start()
    yield proc
    proc.cleanup()


async def test_a_mount_survives_an_agent_restart_and_a_kernel_restart(
        ragent: AgentProcess) -> None:
    async with KernletClient(NATS_URL, agent_id=ragent.agent_id, timeout=90) as c:
        k = await c.create_kernel(IMAGE, mounts=[mount("vf:alice/data")])
        kid = k["id"]
        assert await out(c, kid, "open('/home/work/data/a', 'w').write('1'); print('ok')"
                         ) == "ok\n"
        ragent.stop(signal.SIGKILL)
        ragent.start()
        assert await out(c, kid, "print(open('/home/work/data/a').read())") == "1\n"
        res = await c.restart_kernel(kid)  # a new container, built from the log
        assert res["container_id"] != k["container_id"]
        assert await out(c, kid, "open('/home/work/data/b', 'w').write('2'); "
                                 "import os; print(sorted(os.listdir('/home/work/data')))"
                         ) == "['a', 'b']\n"
        events: list[dict[str, Any]] = await c.events(kid)
        assert events[0]["payload"]["config"]["mounts"] == [mount("vf:alice/data")]
        ragent.stop(signal.SIGTERM)
        ragent.start()
        await c.destroy_kernel(kid)
        await wait_for(lambda: ragent.containers() == [])
        assert pinned(ragent, kid) == []
        assert (ragent.root / "vf" / "alice" / "data" / "b").read_text() == "2"
        assert docker("ps", "-aq", "--filter", f"label=ai.kernlet.kernel-id={kid}") == ""


async def test_cli_create_with_mount(mclient: KernletClient, magent: AgentProcess) -> None:
    from integration.test_cli import cli

    res = cli(magent, "kernel", "create", "--image", IMAGE, "--json",
              "--mount", "vf:alice/data:/home/work/d:ro", "--mount", "vf::/home/work/all")
    assert res.returncode == 0, res.stderr
    kid = json.loads(res.stdout)["id"]
    try:
        events = await mclient.events(kid)
        assert events[0]["payload"]["config"]["mounts"] == [
            mount("vf:alice/data", "/home/work/d", "ro"), mount("vf:", "/home/work/all")]
        assert await out(mclient, kid, "import os; print(os.path.isdir('/home/work/all/alice'))"
                         ) == "True\n"
    finally:
        await mclient.destroy_kernel(kid)
    bad = cli(magent, "kernel", "create", "--image", IMAGE, "--mount", "nope:x:/home/work/d")
    assert bad.returncode != 0
    assert "InvalidMount" in bad.stderr and "configs[0].mounts[0].source" in bad.stderr
