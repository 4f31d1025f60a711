"""Where the doctor looks: :class:`Node` holds every reader and probe (each injectable), and
:func:`diagnose` runs the checks of :mod:`kernlet.doctor._checks` over what they return.

The default probes block (a socket each, a few seconds at most): call them from a thread of
their own, never on an event loop. Docker is asked through aiodocker, as the agent asks it, so
that the same ``docker.url`` forms work (unix://, tcp://).
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from kernlet import halfstack
from kernlet.config import AgentConfig
from kernlet.doctor._checks import (
    CHECKED_SYSCTLS,
    DiskSpace,
    DockerInfo,
    Finding,
    Probe,
    Status,
    check_cgroup_memory,
    check_disk,
    check_docker,
    check_limits,
    check_port_range,
    check_service,
    check_sysctl,
)

__all__ = ["Node", "diagnose", "disk_space", "docker_info", "read_limits"]

_TIMEOUT = 3.0
_WRITE_HINT = "`kernlet doctor --write-sysctl FILE` writes a sysctl.d file with it"


def read_limits() -> dict[str, tuple[int | None, int | None]]:
    """This process's (soft, hard) ``nofile`` and ``nproc``; None stands for unlimited."""
    def one(which: int) -> tuple[int | None, int | None]:
        soft, hard = resource.getrlimit(which)
        inf = resource.RLIM_INFINITY
        return (None if soft == inf else soft, None if hard == inf else hard)

    return {"nofile": one(resource.RLIMIT_NOFILE), "nproc": one(resource.RLIMIT_NPROC)}


def disk_space(path: Path) -> DiskSpace | None:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return DiskSpace(usage.total, usage.free)


def docker_info(url: str, timeout: float = _TIMEOUT) -> DockerInfo:
    """``GET /info`` of the Docker Engine at ``url``."""
    import aiodocker
    import aiohttp

    async def ask() -> DockerInfo:
        docker = aiodocker.Docker(url=url)
        try:
            return DockerInfo.from_info(await asyncio.wait_for(docker.system.info(), timeout))
        finally:
            await docker.close()

    try:
        return asyncio.run(ask())
    except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError,
            ValueError) as exc:
        return DockerInfo(False, str(exc) or exc.__class__.__name__)


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    u = urlsplit(url.split(",")[0].strip())
    return u.hostname or "127.0.0.1", u.port or default_port


def nats_probe(url: str) -> Probe:
    """The first server of ``nats.url``: its INFO line, and JetStream from the monitoring
    port (8222) when that answers."""
    host, port = _host_port(url, halfstack.NATS_PORT)
    p = halfstack.probe_nats(host, port, timeout=_TIMEOUT)
    return Probe(p.answering, p.detail)


def etcd_probe(host: str, port: int) -> Probe:
    p = halfstack.probe_etcd(host, port, timeout=_TIMEOUT)
    return Probe(p.answering, p.detail)


def redis_probe(url: str) -> Probe:
    """``PING`` on a redis:// URL (a server that wants a password still counts as answering);
    a TCP connect on rediss:// (TLS not checked); the socket's presence on unix://."""
    u = urlsplit(url)
    if u.scheme == "unix":
        there = Path(u.path).exists()
        return Probe(there, "socket present" if there else f"no socket at {u.path}")
    host, port = _host_port(url, halfstack.REDIS_PORT)
    if u.scheme == "rediss":
        import socket

        try:
            socket.create_connection((host, port), timeout=_TIMEOUT).close()
        except OSError as exc:
            return Probe(False, exc.strerror or str(exc))
        return Probe(True, "TCP connect (TLS not checked)")
    p = halfstack.probe_redis(host, port, timeout=_TIMEOUT)
    if not p.answering and "NOAUTH" in p.detail:
        return Probe(True, "answers (wants a password)")
    return Probe(p.answering, p.detail)


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


@dataclass(frozen=True)
class Node:
    """The node as the doctor sees it; tests replace any field."""

    proc_sys: Path = Path("/proc/sys")
    proc: Path = Path("/proc")
    cgroup_root: Path = Path("/sys/fs/cgroup")
    limits: Callable[[], Mapping[str, tuple[int | None, int | None]]] = read_limits
    #: whether the agent would run as root (nproc is not enforced for root)
    root: bool = field(default_factory=lambda: os.geteuid() == 0)
    disk: Callable[[Path], DiskSpace | None] = disk_space
    docker: Callable[[str], DockerInfo] = docker_info
    nats: Callable[[str], Probe] = nats_probe
    etcd: Callable[[str, int], Probe] = etcd_probe
    redis: Callable[[str], Probe] = redis_probe

    def sysctl(self, key: str) -> str | None:
        """The value of ``key`` under :attr:`proc_sys`, stripped; None when unreadable."""
        try:
            return (self.proc_sys / key.replace(".", "/")).read_text().strip()
        except OSError:
            return None


def diagnose(cfg: AgentConfig, node: Node | None = None) -> list[Finding]:
    """Every check, in a fixed order, against the configuration ``cfg``."""
    node = node or Node()
    try:
        proc_cgroups: str | None = (node.proc / "cgroups").read_text()
    except OSError:
        proc_cgroups = None
    found = check_cgroup_memory(node.cgroup_root, proc_cgroups)
    found += check_limits(node.limits(), root=node.root)
    found += [check_sysctl(key, node.sysctl(key), want, why, _WRITE_HINT)
              for key, want, why in CHECKED_SYSCTLS]
    found.append(check_port_range(node.sysctl("net.ipv4.ip_local_port_range"),
                                  node.sysctl("net.ipv4.ip_local_reserved_ports"),
                                  cfg.container.port_range, _WRITE_HINT))
    found += check_docker(cfg.docker.url, node.docker(cfg.docker.url))
    for check, path in (("disk.var-dir", cfg.agent.var_dir), ("disk.scratch", cfg.scratch_root),
                        ("disk.log-dir", cfg.log_path.parent)):
        at = _nearest_existing(path)
        found.append(check_disk(check, str(path), str(at), node.disk(at)))
    nats = node.nats(cfg.nats.url)
    found.append(check_service(
        "nats", cfg.nats.url, nats, blocks=True,
        fix="start nats-server (on a development machine: kernlet halfstack up), or set "
            "nats.url in agent.toml"))
    if nats.answering and cfg.nats.jetstream and "JetStream DISABLED" in nats.detail:
        found.append(Finding("nats.jetstream", Status.WARN,
                             "nats.jetstream is on but the server has no JetStream: events "
                             "go out as plain messages, not kept in a stream",
                             "run nats-server with -js, or set nats.jetstream = false"))
    e = cfg.etcd
    found.append(check_service(
        "etcd", f"{e.host}:{e.port}", node.etcd(e.host, e.port) if e.enabled else None,
        blocks=False, disabled_by="etcd.enabled",
        fix="start etcd or set etcd.host/etcd.port (or etcd.enabled = false); without it the "
            "agent runs on its local settings and publishes no liveness key"))
    found.append(check_service(
        "redis", cfg.redis.url, node.redis(cfg.redis.url) if cfg.stats.enabled else None,
        blocks=False, disabled_by="stats.enabled",
        fix="start Redis or set redis.url (or stats.enabled = false); without it no stats "
            "reach the manager"))
    return found
