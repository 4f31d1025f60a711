"""Processes the bench starts (agents), what /proc says about them, and cleaning up after.

Every agent runs as its own process (``python -m kernlet.agent``) with a config written here:
a unique agent id, its var dir under the bench's temp dir, the watcher off. That is what makes
its RSS and CPU readable from /proc. :class:`Cleanup` remembers every agent and every agent id
(Docker label) the bench used, and removes all of it, also after an error or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kernlet.client import KernletClient
from kernlet.errors import AgentTimeout, AgentUnavailable
from kernlet.events import pack

__all__ = [
    "AgentProc",
    "Cleanup",
    "RssSampler",
    "container_memory",
    "cpu_seconds",
    "memory_in_use",
    "rss_bytes",
]

LABEL_AGENT = "ai.kernlet.agent-id"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def memory_in_use(usage: int, stat: str) -> int:
    """What ``docker stats`` shows for a container on cgroup v1: ``memory.usage_in_bytes``
    less the ``total_inactive_file`` line of ``memory.stat`` (page cache it may drop)."""
    for line in stat.splitlines():
        key, _, value = line.partition(" ")
        if key == "total_inactive_file":
            return max(0, usage - int(value))
    return usage


def container_memory(container_id: str, root: Path = Path("/sys/fs/cgroup/memory")) -> int:
    """Memory in use by a container (cgroup v1, Docker's cgroupfs layout), as docker stats."""
    found = list(root.glob(f"docker/{container_id}*"))
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} memory cgroups for container {container_id} "
                           f"under {root}/docker (cgroup v1, cgroupfs driver expected)")
    cg = found[0]
    usage = int((cg / "memory.usage_in_bytes").read_text())
    return memory_in_use(usage, (cg / "memory.stat").read_text())


class RssSampler:
    """Samples a process's RSS on a thread (the bench's loop may be busy); keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.start_rss = rss_bytes(pid)
        self.peak = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, rss_bytes(self.pid))


class Cleanup:
    """What the bench must undo: agent processes and containers labelled with its agent ids.

    :meth:`run_sync` is idempotent and needs no event loop, so it is also the last resort
    after the loop is gone.
    """

    def __init__(self) -> None:
        self.agents: list[AgentProc] = []
        self.agent_ids: list[str] = []

    def run_sync(self) -> list[str]:
        """Stop every agent still running, remove every container of the bench; what was done."""
        done: list[str] = []
        for agent in self.agents:
            if agent.running:
                agent.stop_sync()
                done.append(f"stopped agent {agent.agent_id} (pid {agent.pid})")
        for agent_id in self.agent_ids:
            ids = containers_of(agent_id)
            if ids:
                subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True,
                               check=False, timeout=300)
                done.append(f"removed {len(ids)} container(s) labelled {agent_id}")
        return done


def containers_of(agent_id: str) -> list[str]:
    """Ids of the containers (any state) labelled with this agent id."""
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={LABEL_AGENT}={agent_id}"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    return out.stdout.split()


class AgentProc:
    """One agent process with its own id, config and var dir."""

    def __init__(self, root: Path, agent_id: str, nats_url: str, create_timeout: float = 600,
                 port_range: tuple[int, int] | None = None) -> None:
        self.root = root
        self.agent_id = agent_id
        self.nats_url = nats_url
        self.var_dir = root / "var"
        self.config = root / "agent.toml"
        self.log = root / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'[agent]\nid = "{agent_id}"\nvar-dir = "{self.var_dir}"\n'
            # a kernel of 0.04 cpu (50 on 2 cores) boots its ipykernel in about a minute
            f"create-timeout = {create_timeout}\n"
            f'[nats]\nurl = "{nats_url}"\n'
            "[container]\nstop-grace = 2\n"
            + (f"port-range = [{port_range[0]}, {port_range[1]}]\n" if port_range else "")
            + "[watcher]\nenabled = false\n"
        )

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"agent {self.agent_id} is not running")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self, prefix: tuple[str, ...] = ()) -> None:
        """Start the process (do not wait); ``prefix`` wraps the command (e.g. a profiler)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            # its own session: a Ctrl-C in the terminal reaches the bench, which stops it
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "kernlet.agent", "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def wait_serving(self, client: KernletClient, timeout: float = 60.0) -> float:
        """Ping over NATS until the agent answers; the monotonic time it first answered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"agent {self.agent_id} exited:\n{self.tail()}")
            try:
                await client.call_raw("ping", pack({}), 0.5)
                return time.monotonic()
            except (AgentUnavailable, AgentTimeout):
                await asyncio.sleep(0.005)
        raise RuntimeError(f"agent {self.agent_id} not serving after {timeout} s:\n{self.tail()}")

    async def start(self, client: KernletClient, timeout: float = 60.0) -> float:
        """Spawn and wait until it serves; seconds from spawn to the first answered ping."""
        t0 = time.monotonic()
        self.spawn()
        return await self.wait_serving(client, timeout) - t0

    async def stop(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.stop_sync, timeout)

    def stop_sync(self, timeout: float = 30.0) -> None:
        """SIGTERM (kernels keep running), then SIGKILL if it does not exit in time."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
