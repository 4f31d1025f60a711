"""A Docker daemon restart while kernels run: each kernel ends up re-adopted or recorded
terminated, consistently with what Docker reports.

The test restarts dockerd through the halfstack, so it runs only when `kernlet halfstack up`
started dockerd (as in CI); a dockerd started by someone else is never touched.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, wait_for
from kernlet import halfstack as hs
from kernlet.client import KernletClient
from kernlet.errors import KernelNotRunning

pytestmark = pytest.mark.integration

DOCKER = next(s for s in hs.SERVICES if s.name == "docker")


@pytest.fixture
def managed_docker(halfstack: None) -> Iterator[Path]:
    state = hs.resolve_state_dir()
    if hs.read_pid_file(DOCKER.pid_file(state)) is None:
        pytest.skip("dockerd was not started by `kernlet halfstack up`; not restarting it")
    yield state
    hs.up(state, services=[DOCKER], install=False)  # whatever happened, bring it back


def docker_state(container_id: str) -> tuple[bool, int] | None:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", container_id],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        return None
    running, code = out.stdout.split()
    return running == "true", int(code)


async def test_docker_restart_while_kernels_run(managed_docker: Path, tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path, f"dockerd-{uuid.uuid4().hex[:8]}")
    agent.config.write_text(agent.config.read_text().replace(
        "[agent]\n", "[agent]\nreconcile-interval = 1\n"))
    agent.start()
    try:
        async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=60) as c:
            kernels = [await c.create_kernel(IMAGE, mem=256 * 1024**2) for _ in range(2)]
            for k in kernels:
                await c.execute(k["id"], "mark = 'before the restart'")
            await asyncio.to_thread(hs.stop_recorded, DOCKER, managed_docker)
            await asyncio.to_thread(hs.up, managed_docker, [DOCKER], None, False)
            seen = {k["id"]: docker_state(k["container_id"]) for k in kernels}

            async def settled() -> list[dict[str, Any]] | None:
                ks = {x["id"]: x for x in await c.list_kernels(all=True)}
                mine = [ks[k["id"]] for k in kernels]
                return mine if all(x["state"] in ("running", "terminated") for x in mine) else None

            final = await wait_for(settled, timeout=60)
            for k, now in zip(kernels, final, strict=True):
                docker_says = seen[k["id"]]
                if docker_says is not None and docker_says[0]:
                    assert now["state"] == "running", now
                    res = await c.execute(k["id"], "print(mark)")
                    assert res["console"] == [["stdout", "before the restart\n"]]
                    await c.destroy_kernel(k["id"])
                else:
                    assert now["state"] == "terminated", now
                    if docker_says is not None:
                        assert now["exit_code"] == docker_says[1]
                    with pytest.raises(KernelNotRunning):
                        await c.execute(k["id"], "1")
        await wait_for(lambda: agent.containers() == [] and agent.scratch_dirs() == [])
    finally:
        agent.cleanup()
