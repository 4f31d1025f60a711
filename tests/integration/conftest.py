"""Fixtures for integration tests: the real halfstack, the real image, a real agent process.

The halfstack (``kernlet halfstack up``) and the image (``kernlet image build python``) must
exist; `.ci/run` makes both. A missing one fails the test with the command to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kernlet.client import KernletClient

IMAGE = os.environ.get("KERNLET_TEST_IMAGE", "kernlet/python:3.11")
NATS_URL = "nats://127.0.0.1:4222"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def halfstack() -> None:
    missing = [name for name, port in (("nats", 4222),) if not _port_open(port)]
    if not Path("/var/run/docker.sock").exists():
        missing.append("docker")
    if missing:
        pytest.fail(f"halfstack not running ({', '.join(missing)}): run `kernlet halfstack up`")
    try:
        docker("image", "inspect", IMAGE)
    except subprocess.CalledProcessError:
        pytest.fail(f"image {IMAGE} missing: run `kernlet image build python`")


class AgentProcess:
    """A real agent (``python -m kernlet.agent``) with its own id and var dir."""

    def __init__(self, root: Path, agent_id: str, extra: str = "") -> None:
        if "[watcher]" not in extra:  # a free port: test agents run side by side
            extra += "[watcher]\nport = 0\n"
        self.root = root
        self.agent_id = agent_id
        self.var_dir = root / "var"
        self.config = root / "agent.toml"
        self.config.write_text(
            f'[agent]\nid = "{agent_id}"\nvar-dir = "{self.var_dir}"\n'
            f'[container]\nstop-grace = 2\ndefault-cpu = 0.1\n'
            f'[limits]\nmax-request = "256k"\n'
            f'max-code = "128k"\n{extra}'
        )
        self.log = root / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kernlet.agent", "--config", str(self.config)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.log.read_text()[-3000:]}")
            if " ready" in self.log.read_text()[offset:]:
                return
            time.sleep(0.1)
        raise RuntimeError(f"agent not ready: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def containers(self) -> list[str]:
        out = docker("ps", "-aq", "--filter", f"label=ai.kernlet.agent-id={self.agent_id}")
        return out.split()

    def scratch_dirs(self) -> list[str]:
        root = self.var_dir / "scratch"
        return sorted(p.name for p in root.iterdir()) if root.exists() else []

    def cleanup(self) -> None:
        self.stop()
        for cid in self.containers():
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
        # scratch mounts (tmpfs, loop images) of kernels a failed test left behind
        root = str(self.var_dir / "scratch") + "/"
        for line in Path("/proc/self/mounts").read_text().splitlines():
            if line.split()[1].startswith(root):
                subprocess.run(["umount", "-l", line.split()[1]], capture_output=True,
                               check=False)


@pytest.fixture(scope="module")
def agent(halfstack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    root = tmp_path_factory.mktemp("agent")
    proc = AgentProcess(root, f"test-{uuid.uuid4().hex[:8]}")
    proc.start()
    yield proc
    proc.cleanup()


@pytest.fixture
async def client(agent: AgentProcess) -> AsyncIterator[KernletClient]:
    async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=90) as c:
        yield c


async def wait_for(pred, timeout: float = 30.0, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")


@contextlib.contextmanager
def no_leaks(agent: AgentProcess) -> Iterator[None]:
    before_c, before_d = set(agent.containers()), set(agent.scratch_dirs())
    yield
    assert set(agent.containers()) <= before_c
    assert set(agent.scratch_dirs()) <= before_d
