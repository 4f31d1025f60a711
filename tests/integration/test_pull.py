"""Pulls from a local registry on loopback: check_and_pull with progress, and create's pull."""

from __future__ import annotations

import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator

import pytest

from integration.conftest import AgentProcess, docker
from integration.registries import registry as local_registry
from kernlet.client import EventSubscriber, KernletClient
from kernlet.errors import DockerError, InvalidRequest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry on a free loopback port, with one small image pushed."""
    root = tmp_path_factory.mktemp("registry")
    with local_registry(root / "registry") as reg:
        # a small image (4 MiB of random bytes, so the pull has progress to report)
        payload = root / "payload"
        payload.mkdir()
        (payload / "blob").write_bytes(os.urandom(4 * 1024 * 1024))
        with tarfile.open(root / "img.tar", "w") as tar:
            tar.add(payload / "blob", arcname="blob")
        name = f"{reg.host}/kernlet-test/small:{uuid.uuid4().hex[:6]}"
        docker("import", str(root / "img.tar"), name)
        docker("push", name)
        docker("rmi", name)
        yield name


async def test_check_and_pull_reports_progress(
    client: KernletClient, agent: AgentProcess, registry: str
) -> None:
    events = await EventSubscriber(client.nc, agent_id=agent.agent_id).start()
    try:
        res = await client.pull(registry, timeout=60)
        assert res["status"] == "pulled" and res["id"].startswith("sha256:")
        assert docker("image", "inspect", "-f", "{{.Id}}", registry).strip() == res["id"]
        types = []
        while True:
            ev = await events.next(timeout=5)
            types.append(ev["type"])
            if ev["type"] == "image_pulled":
                break
        assert "image_pull_progress" in types
        again = await client.check_and_pull(registry)
        assert again["status"] == "present"
    finally:
        await events.stop()
        subprocess.run(["docker", "rmi", registry], capture_output=True, check=False)


async def test_pull_of_missing_image_fails_cleanly(client: KernletClient, registry: str) -> None:
    with pytest.raises(DockerError):
        await client.pull(registry.rsplit(":", 1)[0] + ":no-such-tag", timeout=30)
    assert (await client.ping())["msg"] == ""


async def test_create_pulls_a_missing_registry_image(
    client: KernletClient, agent: AgentProcess, registry: str
) -> None:
    kid = f"pull-{uuid.uuid4().hex[:8]}"
    try:
        # the small image pulls fine but is no kernel image: the create fails after the pull
        with pytest.raises(InvalidRequest, match="not a kernlet kernel image"):
            await client.create_kernel(registry, kernel_id=kid)
        types = [e["type"] for e in await client.events(kid)]
        assert types[:2] == ["kernel_preparing", "kernel_pulling"]
        assert types[-1] == "kernel_terminated"
        assert kid not in agent.scratch_dirs()
    finally:
        subprocess.run(["docker", "rmi", registry], capture_output=True, check=False)
