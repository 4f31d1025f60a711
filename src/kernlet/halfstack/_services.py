"""The services of the half stack, as data: what to install, how to start and probe each."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kernlet.halfstack._probes import (
    DOCKER_SOCKET,
    ETCD_PEER_PORT,
    ETCD_PORT,
    LOOPBACK,
    NATS_MONITOR_PORT,
    NATS_PORT,
    REDIS_PORT,
    Probe,
    probe_docker,
    probe_etcd,
    probe_nats,
    probe_redis,
)
from kernlet.halfstack._registry import REGISTRY_PORT, probe_registry, write_registry_config

DEFAULT_STATE_DIR = Path("/var/lib/kernlet/halfstack")
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class HalfstackError(Exception):
    """A service could not be installed, started or stopped; the message says which and why."""


def which(binary: str) -> str | None:
    """``binary`` on ``$PATH``, or in the sbin and bin directories (dockerd lives in sbin)."""
    path = os.environ.get("PATH", "")
    return shutil.which(binary, path=f"{path}:{_SBIN_PATH}" if path else _SBIN_PATH)


@dataclass(frozen=True)
class Service:
    """One service of the half stack: how to install, start and probe it."""

    name: str
    endpoint: str  # where it answers, for people: "127.0.0.1:6379", "unix:///var/run/docker.sock"
    binary: str  # the program ``command`` runs, found on PATH
    package: str  # the Debian package that provides ``binary``
    command: Callable[[Path], list[str]]  # arguments after the binary, given the data directory
    probe: Callable[[], Probe]
    start_timeout: float = 30.0

    def argv(self, state_dir: Path) -> list[str]:
        """The command line; ``command`` may write files into the data directory (the
        registry's config), so this is called only to start the service."""
        return [which(self.binary) or self.binary, *self.command(state_dir / self.name)]

    def pid_file(self, state_dir: Path) -> Path:
        return state_dir / f"{self.name}.pid"

    def log_file(self, state_dir: Path) -> Path:
        return state_dir / f"{self.name}.log"


@dataclass(frozen=True)
class ServiceStatus:
    """What ``up``, ``down`` or ``status`` found or did for one service."""

    name: str
    endpoint: str
    answering: bool
    pid: int | None  # the pid kernlet recorded, when kernlet started it
    note: str  # who runs it, or what ``down`` did
    detail: str = ""  # what the probe said
    log_file: Path | None = None

    @property
    def managed(self) -> bool:
        return self.pid is not None


def _nats_ready() -> Probe:
    # A nats-server that kernlet starts must have JetStream; "answering" alone is not enough.
    probe = probe_nats()
    if probe.answering and "JetStream enabled" not in probe.detail:
        return Probe(False, probe.detail)
    return probe


SERVICES: tuple[Service, ...] = (
    Service(
        name="docker",
        endpoint=f"unix://{DOCKER_SOCKET}",
        binary="dockerd",
        package="docker.io",
        # --ip: ports published without an address bind to loopback, never to all interfaces.
        command=lambda _data: ["--host", f"unix://{DOCKER_SOCKET}", "--ip", LOOPBACK],
        probe=probe_docker,
        start_timeout=60.0,
    ),
    Service(
        name="nats",
        endpoint=f"{LOOPBACK}:{NATS_PORT}, http :{NATS_MONITOR_PORT}",
        binary="nats-server",
        package="nats-server",
        command=lambda data: [
            "-a", LOOPBACK, "-p", str(NATS_PORT), "-m", str(NATS_MONITOR_PORT),
            "-js", "-sd", str(data),
        ],
        probe=_nats_ready,
    ),
    Service(
        name="etcd",
        endpoint=f"{LOOPBACK}:{ETCD_PORT}, peer :{ETCD_PEER_PORT}",
        binary="etcd",
        package="etcd-server",
        command=lambda data: [
            "--data-dir", str(data),
            "--listen-client-urls", f"http://{LOOPBACK}:{ETCD_PORT}",
            "--advertise-client-urls", f"http://{LOOPBACK}:{ETCD_PORT}",
            "--listen-peer-urls", f"http://{LOOPBACK}:{ETCD_PEER_PORT}",
        ],
        probe=probe_etcd,
    ),
    Service(
        name="redis",
        endpoint=f"{LOOPBACK}:{REDIS_PORT}",
        binary="redis-server",
        package="redis-server",
        command=lambda data: [
            "--bind", LOOPBACK, "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
            "--dir", str(data),
        ],
        probe=probe_redis,
    ),
    Service(
        name="registry",
        endpoint=f"http://{LOOPBACK}:{REGISTRY_PORT}",
        binary="docker-registry",
        package="docker-registry",
        command=write_registry_config,
        probe=probe_registry,
    ),
)

# Programs that are not services but that kernlet needs: the docker CLI, docker's init (for
# `docker run --init`), and the image builder.
TOOLS: dict[str, str] = {
    "docker": "docker.io",
    "tini": "tini",
    "mmdebstrap": "mmdebstrap",
}


def resolve_state_dir(state_dir: Path | str | None = None) -> Path:
    """The explicit directory, else ``$KERNLET_HALFSTACK_DIR``, else the default."""
    if state_dir is None:
        state_dir = os.environ.get("KERNLET_HALFSTACK_DIR") or DEFAULT_STATE_DIR
    return Path(state_dir)
