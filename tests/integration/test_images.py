"""The image pipeline on real Docker and a real registry that wants a password: commit a
kernel, create from the commit, push, purge, pull back by a create's auto-pull; wrong
credentials; a commit cut short by the agent's death."""

from __future__ import annotations

import json
import secrets
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, docker
from integration.registries import Registry, registry
from integration.test_cli import cli, json_lines, ok_json
from kernlet.client import EventSubscriber, KernletClient
from kernlet.errors import AgentTimeout, AgentUnavailable, KernelNotFound, RegistryAuthFailed

pytestmark = pytest.mark.integration

#: this worktree's port band (33000-33199): one sub-range per agent of this module
PORTS = {"good": "[33100, 33119]", "bad": "[33120, 33139]", "crash": "[33140, 33159]"}
SITE = "/usr/local/lib/python3.11/dist-packages"


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    password = "pw-" + secrets.token_hex(12)
    with registry(tmp_path_factory.mktemp("authreg"), "kernlet", password) as r:
        yield r


def _agent(root: Path, kind: str, extra: str = "") -> AgentProcess:
    proc = AgentProcess(root, f"test-img-{kind}-{uuid.uuid4().hex[:6]}", extra)
    proc.config.write_text(proc.config.read_text().replace(
        "[container]\n", f"[container]\nport-range = {PORTS[kind]}\n", 1))
    return proc


def _creds(reg: Registry, password: str) -> str:
    return f'[registries."{reg.host}"]\nusername = "{reg.username}"\npassword = "{password}"\n'


@pytest.fixture(scope="module")
def good(reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    root = tmp_path_factory.mktemp("agent-good")
    # the password from a file, as an operator would keep it
    (root / "registry.password").write_text(reg.password + "\n")
    proc = _agent(root, "good", f'[registries."{reg.host}"]\nusername = "{reg.username}"\n'
                                f'password-file = "{root / "registry.password"}"\n')
    proc.start()
    yield proc
    proc.cleanup()


async def _client(agent: AgentProcess) -> KernletClient:
    c = KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=90)
    await c.connect()
    return c


async def _stdout(client: KernletClient, kid: str, code: str) -> str:
    out: list[str] = []
    res = await client.run(kid, code, on_output=lambda k, d: out.append(d) if k == "stdout"
                           else None)
    assert res["status"] == "finished", res
    return "".join(out)


def _rmi(*refs: str) -> None:
    for ref in refs:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, check=False)


def _secrets_absent(agent: AgentProcess, *words: str) -> None:
    """No log line and no stored event holds any of ``words``."""
    log = agent.log.read_bytes()
    db = b"".join(p.read_bytes() for p in agent.var_dir.glob("events.sqlite*"))
    for word in words:
        assert word.encode() not in log, "a secret is in the agent's log"
        assert word.encode() not in db, "a secret is in the event log"


async def test_commit_create_push_purge_and_pull_back(reg: Registry, good: AgentProcess) -> None:
    client = await _client(good)
    seen: list[dict[str, Any]] = []
    events = await EventSubscriber(client.nc, agent_id=good.agent_id).start()
    repo = f"{reg.host}/kernlet-test/committed"
    ref = f"{repo}:{uuid.uuid4().hex[:6]}"
    kids: list[str] = []
    try:
        token = "tok-" + secrets.token_hex(8)  # the user's environment stays out of the image
        k1 = (await client.create_kernel(IMAGE, environ={"MY_TOKEN": token}))["id"]
        kids.append(k1)
        # a package installed into the kernel's system paths (as root: the kernel's user
        # cannot write there), a file written by the kernel's code outside its mounts, and
        # one in /home/work (the scratch dir: a mount, so not part of the image)
        cid = next(k["container_id"] for k in await client.list_kernels() if k["id"] == k1)
        docker("exec", "-u", "0", cid, "sh", "-c",
               f"mkdir -p {SITE} && echo 'VALUE = 42' > {SITE}/commitmark.py")
        await _stdout(client, k1, "open('/tmp/marker', 'w').write('kept')\n"
                                  "open('/home/work/scratch-only', 'w').write('x')\n")

        status = await client.commit(k1, repo, ref.rsplit(":", 1)[1])
        assert status["status"] == "done" and status["image_id"].startswith("sha256:")
        assert (await client.get_commit_status(kernel_id=k1))["commit_id"] == status["commit_id"]
        labels = json_labels(ref)
        assert labels["ai.kernlet.kernelspec"] == "1"  # the base image's labels are kept
        assert labels["ai.kernlet.committed-from"] == k1
        assert token not in docker("image", "inspect", "-f", "{{.Config.Env}}", ref)
        # the kernel keeps running
        assert (await _stdout(client, k1, "print('still here')")) == "still here\n"

        # the heartbeat's inventory (list_images: a fresh rescan) carries it
        listed = {t: i for i in await client.list_images() for t in i["tags"]}
        assert listed[ref]["labels"]["ai.kernlet.committed-from"] == k1
        assert listed[ref]["size"] > 0

        k2 = (await client.create_kernel(ref))["id"]
        kids.append(k2)
        check = ("import commitmark, os; print(commitmark.VALUE, open('/tmp/marker').read(), "
                 "os.path.exists('/home/work/scratch-only'))")
        assert await _stdout(client, k2, check) == "42 kept False\n"

        pushed = await client.push(ref, on_progress=seen.append)
        assert pushed["digest"].startswith("sha256:")
        digests = {d for i in await client.list_images() if ref in i["tags"]
                   for d in i["digests"]}
        assert f"{repo}@{pushed['digest']}" in digests

        # purge refuses an image a live kernel runs, force or not
        for force in (False, True):
            res = await client.purge_images([ref], force=force)
            assert res["removed"] == [] and res["refused"][ref]["type"] == "ImageInUse"
        await client.destroy_kernel(k2)
        kids.remove(k2)
        res = await client.purge_images([ref])
        assert res == {"removed": [ref], "refused": {}}
        with pytest.raises(subprocess.CalledProcessError):
            docker("image", "inspect", ref)

        # a create pulls it back from the registry, with the configured credentials
        k3 = (await client.create_kernel(ref))["id"]
        kids.append(k3)
        assert await _stdout(client, k3, check) == "42 kept False\n"
        types = [e["type"] for e in await client.events(k3)]
        assert types[:2] == ["kernel_preparing", "kernel_pulling"]
        agent_types = [e["type"] for e in await client.events("_agent")]
        for t in ("image_commit_started", "image_commit_finished", "image_push_progress",
                  "image_pushed", "images_purged"):
            assert t in agent_types, t
    finally:
        await events.stop()
        for kid in kids:
            await client.destroy_kernel(kid)
        await client.close()
        _rmi(ref)
    _secrets_absent(good, reg.password)


def json_labels(ref: str) -> dict[str, str]:
    return dict(json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", ref)))


async def test_purge_needs_force_for_an_image_a_stopped_container_uses(
    good: AgentProcess, tmp_path: Path,
) -> None:
    client = await _client(good)
    ref = f"kernlet-test/purge:{uuid.uuid4().hex[:6]}"
    (tmp_path / "blob").write_bytes(secrets.token_bytes(1024))
    with tarfile.open(tmp_path / "img.tar", "w") as tar:
        tar.add(tmp_path / "blob", arcname="blob")
    docker("import", str(tmp_path / "img.tar"), ref)  # an image of its own (one name only)
    name = f"kernlet-test-purge-{uuid.uuid4().hex[:6]}"
    docker("create", "--name", name, ref, "/blob")
    try:
        res = await client.purge_images([ref])
        assert res["removed"] == [] and res["refused"][ref]["type"] == "ImageInUse"
        docker("image", "inspect", ref)
        res = await client.purge_images([ref, "kernlet-test/no-such:1"], force=True)
        assert res["removed"] == [ref]
        assert res["refused"]["kernlet-test/no-such:1"]["type"] == "ImageNotFound"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        _rmi(ref)
        await client.close()


async def test_wrong_credentials_fail_typed_and_no_password_is_logged(
    reg: Registry, good: AgentProcess, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    wrong = "wrong-" + secrets.token_hex(12)
    bad = _agent(tmp_path_factory.mktemp("agent-bad"), "bad", _creds(reg, wrong))
    bad.start()
    ref = f"{reg.host}/kernlet-test/small:{uuid.uuid4().hex[:6]}"
    docker("tag", IMAGE, ref)
    client = await _client(bad)
    events = await EventSubscriber(client.nc, agent_id=bad.agent_id).start()
    try:
        with pytest.raises(RegistryAuthFailed):
            await client.push(ref)
        # the registry checks credentials before it looks for the image
        with pytest.raises(RegistryAuthFailed):
            await client.pull(f"{reg.host}/kernlet-test/absent:1", timeout=60)
        with pytest.raises(RegistryAuthFailed):
            await client.create_kernel(f"{reg.host}/kernlet-test/absent:1")
        wire = []
        while True:
            try:
                wire.append(repr(await events.next(timeout=1)))
            except TimeoutError:
                break
        assert wire and not any(wrong in w or reg.password in w for w in wire)
    finally:
        await events.stop()
        await client.close()
        bad.cleanup()
        _rmi(ref)
    _secrets_absent(bad, wrong, reg.password)


async def test_a_commit_cut_short_by_the_agents_death_is_reported_failed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    crash = _agent(tmp_path_factory.mktemp("agent-crash"), "crash",
                   '[debug]\ncrash-after = "image_commit_started"\n')
    crash.start()
    client = await _client(crash)
    kid = ""
    try:
        kid = (await client.create_kernel(IMAGE))["id"]
        try:  # the agent dies once image_commit_started is durable: the reply may be lost
            await client.call("commit_kernel", reply_timeout=10, kernel_id=kid,
                              image="kernlet-test/crashed", tag="1")
        except (AgentTimeout, AgentUnavailable):
            pass
        assert crash.proc is not None
        assert crash.proc.wait(30) == 137
        crash.config.write_text(crash.config.read_text().replace(
            'crash-after = "image_commit_started"', ""))
        crash.start()
        status = await client.get_commit_status(kernel_id=kid)
        assert status["status"] == "failed" and "restarted" in status["error"]
        types = [e["type"] for e in await client.events("_agent")]
        assert types.index("image_commit_finished") > types.index("image_commit_started")
        # the kernel was re-adopted and keeps running
        assert await _stdout(client, kid, "print(6 * 7)") == "42\n"
        with pytest.raises(KernelNotFound):
            await client.commit_kernel("no-such-kernel", "kernlet-test/x")
    finally:
        if kid and crash.proc is not None and crash.proc.poll() is None:
            await client.destroy_kernel(kid)
        await client.close()
        crash.cleanup()
        _rmi("kernlet-test/crashed:1")


def test_cli_commit_push_and_rm(reg: Registry, good: AgentProcess) -> None:
    kid = ok_json(good, "kernel", "create", "--image", IMAGE)["id"]
    ref = f"{reg.host}/kernlet-test/cli:{uuid.uuid4().hex[:6]}"
    user = ""
    try:
        res = cli(good, "kernel", "commit", kid, ref, "--json")
        assert res.returncode == 0, res.stderr
        lines = json_lines(res.stdout)
        assert lines[0]["type"] == "started" and lines[0]["data"]["status"] == "running"
        assert lines[-1]["type"] == "result" and lines[-1]["data"]["status"] == "done"
        res = cli(good, "image", "push", ref, "--json")
        assert res.returncode == 0, res.stderr
        last = json_lines(res.stdout)[-1]
        assert last["type"] == "result" and last["data"]["digest"].startswith("sha256:")
        user = ok_json(good, "kernel", "create", "--image", ref)["id"]
        res = cli(good, "image", "rm", ref)
        assert res.returncode == 65 and "ImageInUse" in res.stderr
        ok_json(good, "kernel", "destroy", user)
        user = ""
        assert ok_json(good, "image", "rm", ref) == {"removed": [ref], "refused": {}}
    finally:
        for k in (kid, user):
            if k:
                cli(good, "kernel", "destroy", k)
        _rmi(ref)
    _secrets_absent(good, reg.password)
