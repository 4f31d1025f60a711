"""The doctor's checks: pure functions from what was read to findings.

Nothing here opens a socket or asks the process about itself; :mod:`kernlet.doctor._node`
does, and hands the results in (the cgroup check reads files under the root it is given).
Each check returns :class:`Finding` values whose ``fix`` says what to do.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernlet.doctor._sysctl import (
    RECOMMENDED_LIMITS,
    limits_fix,
    parse_port_list,
    parse_range,
    suggest_local_range,
)

__all__ = [
    "CHECKED_SYSCTLS",
    "DiskSpace",
    "DockerInfo",
    "Finding",
    "Probe",
    "Status",
    "check_cgroup_memory",
    "check_disk",
    "check_docker",
    "check_limits",
    "check_port_range",
    "check_service",
    "check_sysctl",
]

GIB = 1024**3

#: sysctls compared with the reference README's values: (key, at least, why it matters)
CHECKED_SYSCTLS: tuple[tuple[str, int, str], ...] = (
    ("fs.file-max", 2048000, "open files of the whole node"),
    ("fs.inotify.max_user_watches", 524288,
     "file watches per user (kernels' file watchers, Jupyter, language servers)"),
    ("net.core.somaxconn", 1024, "listen backlog of kernels' service ports"),
)

#: storage drivers that copy on write and that Docker supports today
GOOD_DRIVERS = ("overlay2", "overlayfs", "btrfs", "zfs", "fuse-overlayfs")


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"  #: works, but not as the reference recommends
    FAIL = "fail"  #: blocks the agent, or kernels, from working


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the doctor looked at."""

    #: stable name of the check ("limits.nofile", "ports.local-range", "nats", ...)
    check: str
    status: Status
    #: what was found
    detail: str
    #: what to do about it; empty when the status is ok
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": str(self.status), "detail": self.detail,
                "fix": self.fix}


@dataclass(frozen=True, slots=True)
class Probe:
    """Whether a service answered, and what it said."""

    answering: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DockerInfo:
    """What ``GET /info`` of the Docker Engine said (``reachable=False``: why not, in detail)."""

    reachable: bool
    detail: str = ""
    version: str = ""
    storage_driver: str = ""
    #: Docker's own view of cgroup memory limits (``MemoryLimit``); None when not reported
    memory_limit: bool | None = None

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> DockerInfo:
        mem = info.get("MemoryLimit")
        return cls(True, f"root dir {info.get('DockerRootDir', '?')}",
                   str(info.get("ServerVersion", "?")), str(info.get("Driver") or ""),
                   mem if isinstance(mem, bool) else None)


@dataclass(frozen=True, slots=True)
class DiskSpace:
    total: int  #: bytes
    free: int  #: bytes available to an unprivileged user


def _ok(check: str, detail: str) -> Finding:
    return Finding(check, Status.OK, detail)


# --- cgroups --------------------------------------------------------------------------------

_GRUB_FIX = ("boot with `cgroup_enable=memory swapaccount=1` (add them to GRUB_CMDLINE_LINUX "
             "in /etc/default/grub, run update-grub, reboot)")


def check_cgroup_memory(cgroup_root: Path, proc_cgroups: str | None) -> list[Finding]:
    """Memory and swap accounting, from the files under ``cgroup_root`` (/sys/fs/cgroup) and
    the text of ``/proc/cgroups`` (None: unreadable). v2 when the root has cgroup.controllers."""
    controllers = cgroup_root / "cgroup.controllers"
    if controllers.is_file():
        layout = "cgroup v2"
        memory = "memory" in _read(controllers).split()
        swap = any(cgroup_root.glob("*/memory.swap.max"))
    else:
        layout = "cgroup v1"
        memory = (cgroup_root / "memory" / "memory.limit_in_bytes").is_file() and \
            _v1_enabled(proc_cgroups, "memory")
        swap = (cgroup_root / "memory" / "memory.memsw.limit_in_bytes").is_file()
    if not memory:
        return [Finding("cgroup.memory", Status.FAIL,
                        f"{layout}: no memory controller; kernels' memory limits are not "
                        "enforced and their usage is not measured", _GRUB_FIX)]
    found = [_ok("cgroup.memory", f"{layout}: memory controller enabled")]
    if swap:
        found.append(_ok("cgroup.swap", f"{layout}: swap accounting enabled"))
    else:
        found.append(Finding("cgroup.swap", Status.WARN,
                             f"{layout}: no swap accounting; a kernel can swap past its "
                             "memory limit", _GRUB_FIX))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _v1_enabled(proc_cgroups: str | None, name: str) -> bool:
    for line in (proc_cgroups or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == name:
            return parts[3] == "1"
    return proc_cgroups is None  # cannot tell: trust the directory


# --- limits ---------------------------------------------------------------------------------

#: below these soft limits the agent is blocked (fail); below the reference's, warn
LIMIT_FLOORS = {"nofile": 1024, "nproc": 1024}


def _show(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def check_limits(limits: Mapping[str, tuple[int | None, int | None]],
                 root: bool = False) -> list[Finding]:
    """The process's ``nofile`` and ``nproc`` (soft, hard; None = unlimited) against the
    reference's ``limits.conf``. ``root``: nproc is not enforced for root."""
    found = []
    for name, want in RECOMMENDED_LIMITS.items():
        check = f"limits.{name}"
        if name not in limits:
            found.append(Finding(check, Status.WARN, f"{name} limit could not be read",
                                 limits_fix(name)))
            continue
        soft, hard = limits[name]
        detail = f"soft {_show(soft)}, hard {_show(hard)} (reference {want})"
        low = [v for v in (soft, hard) if v is not None and v < want]
        if not low or (name == "nproc" and root):
            found.append(_ok(check, detail + (", not enforced for root" if low else "")))
            continue
        fix = limits_fix(name)
        blocked = soft is not None and soft < LIMIT_FLOORS[name]
        found.append(Finding(check, Status.FAIL if blocked else Status.WARN,
                             detail + (f"; below {LIMIT_FLOORS[name]} the agent runs out of them"
                                       if blocked else ""), fix))
    return found


# --- sysctls --------------------------------------------------------------------------------


def check_sysctl(key: str, value: str | None, want: int, why: str,
                 write_hint: str) -> Finding:
    check = f"sysctl.{key}"
    fix = f"sysctl -w {key}={want}, and persist it ({write_hint})"
    if value is None:
        return Finding(check, Status.WARN, f"{key} could not be read", fix)
    try:
        have = int(value.split()[0])
    except (ValueError, IndexError):
        return Finding(check, Status.WARN, f"{key} = {value!r} is not a number", fix)
    if have >= want:
        return _ok(check, f"{key} = {have} (reference {want})")
    return Finding(check, Status.WARN, f"{key} = {have}, below the reference {want}: {why}",
                   fix)


def check_port_range(local_range: str | None, reserved: str | None, pool: tuple[int, int],
                     write_hint: str) -> Finding:
    """``net.ipv4.ip_local_port_range`` must not overlap ``container.port-range``: an
    outgoing connection would take a pool port, and a kernel's service port then fails to
    bind. Ports of the pool listed in ``net.ipv4.ip_local_reserved_ports`` are safe."""
    check = "ports.local-range"
    first, last = pool
    lo_hi = parse_range(local_range or "")
    if lo_hi is None:
        return Finding(check, Status.WARN, "net.ipv4.ip_local_port_range could not be read "
                       f"(container.port-range is {first}-{last})",
                       "check it by hand: `sysctl net.ipv4.ip_local_port_range`")
    lo, hi = lo_hi
    shared = range(max(lo, first), min(hi, last) + 1)
    if not shared:
        return _ok(check, f"ip_local_port_range {lo}-{hi} is clear of container.port-range "
                          f"{first}-{last}")
    exposed = [p for p in shared if p not in parse_port_list(reserved or "")]
    if not exposed:
        return _ok(check, f"ip_local_port_range {lo}-{hi} overlaps container.port-range "
                          f"{first}-{last}, but ip_local_reserved_ports covers the overlap")
    suggested = suggest_local_range(pool)
    move = (f"sysctl -w net.ipv4.ip_local_port_range='{suggested[0]} {suggested[1]}' and "
            f"persist it ({write_hint}); or " if suggested is not None else "")
    return Finding(
        check, Status.FAIL,
        f"ip_local_port_range {lo}-{hi} overlaps container.port-range {first}-{last} "
        f"({len(exposed)} ports, {exposed[0]}-{exposed[-1]}): outgoing connections take "
        "ports the agent hands to kernels",
        f"{move}reserve the pool: sysctl -w net.ipv4.ip_local_reserved_ports={first}-{last}; "
        "or move container.port-range in agent.toml out of the ephemeral range")


# --- Docker, disks, services ----------------------------------------------------------------


def check_docker(url: str, info: DockerInfo) -> list[Finding]:
    if not info.reachable:
        return [Finding("docker", Status.FAIL, f"Docker at {url} does not answer: {info.detail}",
                        "start Docker (systemctl start docker), or set docker.url in "
                        "agent.toml; the agent's user must be able to open the socket "
                        "(root, or the docker group)")]
    found = [_ok("docker", f"Docker {info.version} at {url} ({info.detail})")]
    driver = info.storage_driver
    if driver in GOOD_DRIVERS:
        found.append(_ok("docker.storage-driver", f"storage driver {driver}"))
    else:
        slow = " (copies whole layers: slow creates, much disk)" if driver == "vfs" else ""
        found.append(Finding(
            "docker.storage-driver", Status.WARN if driver else Status.FAIL,
            f"storage driver {driver or 'not reported'}{slow}",
            'use overlay2: {"storage-driver": "overlay2"} in /etc/docker/daemon.json on an '
            "ext4 or xfs (ftype=1) /var/lib/docker, then restart Docker"))
    if info.memory_limit is False:
        found.append(Finding("docker.memory-limit", Status.FAIL,
                             "Docker reports no memory limit support", _GRUB_FIX))
    return found


#: free space below which a disk blocks the agent, and below which the doctor warns
DISK_FAIL, DISK_WARN = 1 * GIB, 10 * GIB


def check_disk(check: str, path: str, measured_at: str, space: DiskSpace | None) -> Finding:
    """Free space where ``path`` is (measured at its nearest existing ancestor)."""
    where = path if measured_at == path else f"{path} (not there yet; measured at {measured_at})"
    if space is None:
        return Finding(check, Status.WARN, f"{where}: free space could not be read",
                       f"check it by hand: df -h {measured_at}")
    free_gib, total_gib = space.free / GIB, space.total / GIB
    detail = f"{where}: {free_gib:.1f} GiB free of {total_gib:.1f} GiB"
    fix = (f"free space on the filesystem of {path}, or move agent.var-dir in agent.toml to a "
           "larger disk")
    if space.free < DISK_FAIL:
        return Finding(check, Status.FAIL, detail + "; kernels cannot be created", fix)
    if space.free < DISK_WARN or space.free < space.total // 10:
        return Finding(check, Status.WARN, detail + "; scratch dirs fill it fast", fix)
    return _ok(check, detail)


def check_service(name: str, endpoint: str, probe: Probe | None, *, blocks: bool,
                  fix: str, disabled_by: str = "") -> Finding:
    """A service the agent talks to. ``probe=None``: disabled by the setting ``disabled_by``.
    ``blocks``: the agent cannot work without it (fail) rather than working degraded (warn)."""
    if probe is None:
        return _ok(name, f"not used ({disabled_by} = false)")
    if probe.answering:
        return _ok(name, f"{endpoint}: {probe.detail}" if probe.detail else endpoint)
    effect = "the agent cannot serve requests" if blocks else "the agent runs degraded"
    return Finding(name, Status.FAIL if blocks else Status.WARN,
                   f"{endpoint} does not answer ({probe.detail}): {effect}", fix)
