"""A session of several kernels (docs/sessions.md): its description checked and resolved into
each kernel's facts, the environment and ``cluster.json`` those facts become, and the session's
ssh keypair.

Pure, except :func:`new_keypair` (randomness). The facts of a kernel are plain data stored in
its ``kernel_preparing`` config under ``"cluster"``, so a kernel rebuilt from the log after an
agent crash knows its session, its network and its hostname without asking anyone::

    {"mode": "single-node", "session_id": "s1", "network": "kernlet-a1-s1",
     "owner": "agent", "role": "sub", "idx": 2, "host": "sub2", "kernel_id": "k3",
     "size": 3, "hosts": [{"host": "main1", "role": "main", "idx": 1, "kernel_id": "k1"}, ...],
     "ssh": true, "ssh_port": 2200}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kernlet.errors import InvalidRequest
from kernlet.layout import CLUSTER_JSON_NAME, IPC_IN_CONTAINER, SSH_PORT

if TYPE_CHECKING:
    from kernlet.protocol import ClusterSpec

__all__ = [
    "CLUSTER_KEY",
    "cluster_env",
    "cluster_json",
    "network_name",
    "new_keypair",
    "plan_cluster",
    "ssh_config",
]

#: where a kernel's facts live in its config (kernel_preparing)
CLUSTER_KEY = "cluster"


def network_name(agent_id: str, session_id: str) -> str:
    """The Docker network an agent makes for a session (a valid Docker network name)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"kernlet-{agent_id}-{session_id}")[:200]


def plan_cluster(
    session_id: str, kernel_ids: Sequence[str], spec: ClusterSpec, agent_id: str,
) -> list[dict[str, Any]]:
    """Each kernel's facts, in ``kernel_ids`` order; InvalidRequest naming the field for a
    description that does not fit the kernels (nothing has been made yet)."""
    n = len(kernel_ids)
    if spec.mode != "single-node":
        raise InvalidRequest(
            f"create_kernels: cluster.mode {spec.mode!r} is not supported by this agent: a "
            "session's kernels share one node's bridge network (multi-node: docs/sessions.md)")
    roles = list(spec.roles) if spec.roles is not None else ["main"] + ["sub"] * (n - 1)
    if len(roles) != n:
        raise InvalidRequest(f"create_kernels: cluster.roles has {len(roles)} role(s) for "
                             f"{n} kernel(s)")
    idx: list[int] = []
    seen: dict[str, int] = {}
    for role in roles:
        seen[role] = seen.get(role, 0) + 1
        idx.append(seen[role])
    hosts = (list(spec.hostnames) if spec.hostnames is not None
             else [f"{r}{i}" for r, i in zip(roles, idx, strict=True)])
    if len(hosts) != n:
        raise InvalidRequest(f"create_kernels: cluster.hostnames has {len(hosts)} name(s) for "
                             f"{n} kernel(s)")
    repeated = sorted({h for h in hosts if hosts.count(h) > 1})
    if repeated:
        raise InvalidRequest(f"create_kernels: cluster.hostnames repeat {repeated}")
    table = [{"host": h, "role": r, "idx": i, "kernel_id": k}
             for h, r, i, k in zip(hosts, roles, idx, kernel_ids, strict=True)]
    network = spec.network or network_name(agent_id, session_id)
    return [{"mode": spec.mode, "session_id": session_id, "network": network,
             "owner": "manager" if spec.network else "agent", **row, "size": n,
             "hosts": table, "ssh": spec.ssh, "ssh_port": SSH_PORT} for row in table]


def cluster_env(facts: Mapping[str, Any]) -> dict[str, str]:
    """The environment a session's kernel gets (empty for a kernel of no cluster)."""
    if not facts:
        return {}
    env = {
        "KERNLET_CLUSTER_MODE": str(facts["mode"]),
        "KERNLET_CLUSTER_ROLE": str(facts["role"]),
        "KERNLET_CLUSTER_IDX": str(facts["idx"]),
        "KERNLET_CLUSTER_HOST": str(facts["host"]),
        "KERNLET_CLUSTER_HOSTS": ",".join(h["host"] for h in facts["hosts"]),
        "KERNLET_CLUSTER_SIZE": str(facts["size"]),
        "KERNLET_CLUSTER_JSON": f"{IPC_IN_CONTAINER}/{CLUSTER_JSON_NAME}",
    }
    if facts.get("ssh"):
        env["KERNLET_SSH_PORT"] = str(facts["ssh_port"])
    return env


def cluster_json(facts: Mapping[str, Any]) -> str:
    """``cluster.json``: the same facts as the environment, with every host's role."""
    keys = ("mode", "session_id", "role", "idx", "host", "size", "hosts", "ssh", "ssh_port")
    return json.dumps({k: facts[k] for k in keys}, indent=2) + "\n"


def ssh_config(facts: Mapping[str, Any]) -> str:
    """``~/.ssh/config``: the session's hosts on the ssh port, with the session's key, without
    host-key prompts (each kernel's host key is made at its start; the network is private)."""
    names = " ".join(h["host"] for h in facts["hosts"])
    return (f"Host {names}\n"
            f"    Port {facts['ssh_port']}\n"
            "    IdentityFile ~/.ssh/id_ed25519\n"
            "    StrictHostKeyChecking no\n"
            "    UserKnownHostsFile /dev/null\n"
            "    LogLevel ERROR\n")


def new_keypair(comment: str) -> tuple[bytes, bytes]:
    """A fresh ed25519 keypair: (private key in OpenSSH format, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
    )

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return private, public + b" " + comment.encode() + b"\n"
