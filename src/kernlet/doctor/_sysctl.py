"""The reference README's kernel settings, and the sysctl file ``--write-sysctl`` writes.

The values are those of the reference agent's README (Kernel/system configuration), with one
change: ``net.ipv4.ip_local_port_range`` is chosen clear of this node's
``container.port-range``, which is what the README asks for.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = [
    "RECOMMENDED_LIMITS",
    "RECOMMENDED_SYSCTLS",
    "limits_fix",
    "parse_port_list",
    "parse_range",
    "suggest_local_range",
    "sysctl_text",
]

#: ``/etc/security/limits.conf`` values of the reference (soft and hard alike)
RECOMMENDED_LIMITS = {"nofile": 512000, "nproc": 65536}



def limits_fix(name: str) -> str:
    """How to raise the limit ``name`` (nofile, nproc) to the reference's value."""
    want = RECOMMENDED_LIMITS[name]
    return (f"add `root soft {name} {want}` and `root hard {name} {want}` (and the same for "
            "the agent's user) to /etc/security/limits.conf, then log in again; for a "
            f"systemd unit, Limit{name.upper()}={want} in its [Service] section")

#: the reference's sysctl settings, in its order
RECOMMENDED_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("fs.file-max", "2048000"),
    ("fs.inotify.max_user_watches", "524288"),
    ("net.core.somaxconn", "1024"),
    ("net.ipv4.tcp_max_syn_backlog", "1024"),
    ("net.ipv4.tcp_slow_start_after_idle", "0"),
    ("net.ipv4.tcp_fin_timeout", "10"),
    ("net.ipv4.tcp_window_scaling", "1"),
    ("net.ipv4.tcp_tw_reuse", "1"),
    ("net.ipv4.tcp_early_retrans", "1"),
    ("net.ipv4.ip_local_port_range", "40000 65000"),
    ("net.core.rmem_max", "16777216"),
    ("net.core.wmem_max", "16777216"),
    ("net.ipv4.tcp_rmem", "4096 12582912 16777216"),
    ("net.ipv4.tcp_wmem", "4096 12582912 16777216"),
    ("net.netfilter.nf_conntrack_max", "10485760"),
    ("net.netfilter.nf_conntrack_tcp_timeout_established", "432000"),
    ("net.netfilter.nf_conntrack_tcp_timeout_close_wait", "10"),
    ("net.netfilter.nf_conntrack_tcp_timeout_fin_wait", "10"),
    ("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "10"),
)

#: settings that are capacities: a node that already has more keeps its value
_AT_LEAST = {"fs.file-max", "fs.inotify.max_user_watches", "net.core.somaxconn",
             "net.ipv4.tcp_max_syn_backlog", "net.core.rmem_max", "net.core.wmem_max",
             "net.netfilter.nf_conntrack_max"}

_REFERENCE_RANGE = (40000, 65000)


def parse_range(text: str) -> tuple[int, int] | None:
    """``"32768\\t60999"`` (as /proc/sys shows ip_local_port_range) -> (32768, 60999)."""
    parts = text.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    lo, hi = int(parts[0]), int(parts[1])
    return (lo, hi) if lo <= hi else None


def parse_port_list(text: str) -> set[int]:
    """``"30000-31000,8080"`` (ip_local_reserved_ports) -> the ports it names; junk is
    ignored."""
    ports: set[int] = set()
    for item in text.replace(" ", "").split(","):
        first, _, last = item.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            ports.update(range(int(first), int(last or first) + 1))
    return ports


def suggest_local_range(pool: tuple[int, int]) -> tuple[int, int] | None:
    """An ephemeral port range clear of ``pool``: the reference's 40000-65000 when it is clear;
    else the ports above the pool (up to 65000, or 65535 past it) when they are 10000 or more,
    else the larger of those and the ports below it (from 10000, or 1024 under it). None when
    neither has 1000 ports: then only reserving the pool's ports helps."""
    first, last = pool
    lo, hi = _REFERENCE_RANGE
    if last < lo or first > hi:
        return _REFERENCE_RANGE
    above = (last + 1, hi if last < hi else 65535)
    below = (10000 if first > 10000 else 1024, first - 1)

    def size(r: tuple[int, int]) -> int:
        return max(0, r[1] - r[0] + 1)

    best = above if size(above) >= 10000 or size(above) >= size(below) else below
    return best if size(best) >= 1000 else None


def sysctl_text(pool: tuple[int, int], current: Callable[[str], str | None]) -> str:
    """The sysctl.d file: the reference's settings, the port range clear of ``pool``, and no
    capacity lowered below what ``current(key)`` says the node has now. Comments only on
    lines of their own (sysctl.d would read a trailing ``#`` as part of the value)."""
    suggested = suggest_local_range(pool)
    lines = [
        "# Written by `kernlet doctor --write-sysctl`: the reference agent's recommended",
        "# settings, with net.ipv4.ip_local_port_range clear of container.port-range",
        f"# ({pool[0]}-{pool[1]}). Nothing was applied. Review, then, as root:",
        "#   cp THIS-FILE /etc/sysctl.d/90-kernlet.conf && sysctl --system",
        "# The net.netfilter keys exist once nf_conntrack is loaded: add nf_conntrack to",
        "# /etc/modules so that they apply at boot.",
    ]
    for key, value in RECOMMENDED_SYSCTLS:
        if key == "net.ipv4.ip_local_port_range":
            if suggested is None:
                lines += ["# no ephemeral range of 1000 ports is clear of the pool: keep the",
                          "# reference's range and reserve the pool's ports instead",
                          f"net.ipv4.ip_local_reserved_ports = {pool[0]}-{pool[1]}"]
            else:
                value = f"{suggested[0]} {suggested[1]}"
        elif key in _AT_LEAST:
            have = (current(key) or "").strip()
            if have.isdigit() and int(have) > int(value):
                lines.append(f"# {key}: the node's {have} kept (the reference says {value})")
                value = have
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"
