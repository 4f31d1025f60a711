"""``kernlet doctor``: the node checked against the reference README and what kernlet needs.

Each check is a pure function (:mod:`._checks`) over what :class:`Node` read or probed (a
/proc/sys root, a limits reader, a cgroup root, Docker and service probes: all injectable).
A finding is ok, warn (works, not as recommended) or fail (blocks the agent or its kernels);
:func:`exit_code` is 1 when any finding fails. :func:`sysctl_text` is the sysctl.d file that
``--write-sysctl`` writes for an operator to apply; nothing here changes the node.
"""

from __future__ import annotations

from collections.abc import Iterable

from kernlet.doctor._checks import (
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
from kernlet.doctor._node import Node, diagnose, disk_space, docker_info, read_limits
from kernlet.doctor._sysctl import (
    RECOMMENDED_LIMITS,
    RECOMMENDED_SYSCTLS,
    parse_range,
    suggest_local_range,
    sysctl_text,
)

__all__ = [
    "RECOMMENDED_LIMITS",
    "RECOMMENDED_SYSCTLS",
    "DiskSpace",
    "DockerInfo",
    "Finding",
    "Node",
    "Probe",
    "Status",
    "check_cgroup_memory",
    "check_disk",
    "check_docker",
    "check_limits",
    "check_port_range",
    "check_service",
    "check_sysctl",
    "counts",
    "diagnose",
    "disk_space",
    "docker_info",
    "exit_code",
    "parse_range",
    "read_limits",
    "suggest_local_range",
    "sysctl_text",
]


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    """How many findings have each status: ``{"ok": n, "warn": n, "fail": n}``."""
    result = {str(s): 0 for s in Status}
    for f in findings:
        result[str(f.status)] += 1
    return result


def exit_code(findings: Iterable[Finding]) -> int:
    """1 when any finding fails (the agent is blocked), else 0 (warnings do not block)."""
    return 1 if any(f.status is Status.FAIL for f in findings) else 0
