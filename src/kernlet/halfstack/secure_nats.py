"""A second nats-server on loopback with TLS, user accounts and docs/protocol.md's permissions.

``kernlet halfstack secure-nats up --agent ID ...`` makes, in ``STATE/secure-nats/``: a
throwaway CA (``ca.pem``), the server's certificate, a client certificate and a password for
each user (every agent, and ``manager``), the server's config (``nats.conf``), the ``[nats]``
section of each agent's agent.toml (``agent-ID.toml``) and the manager's connection facts
(``manager.json``); then it starts nats-server on 127.0.0.1:4223 (monitoring :8223) like the
other services: its own session, a pid file, a log, stopped by that pid only. With ``mtls``
every client must also show a certificate of that CA.

The permissions are those of docs/protocol.md ("Security"); the NATS security tests use these
same functions, so what is shipped is what is tested.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from kernlet.halfstack._probes import LOOPBACK, probe_nats
from kernlet.halfstack._services import Service
from kernlet.halfstack.pki import CA

__all__ = [
    "MANAGER_USER",
    "NAME",
    "SECURE_NATS_MONITOR_PORT",
    "SECURE_NATS_PORT",
    "SecureNats",
    "agent_permissions",
    "authorization",
    "manager_permissions",
    "prepare",
]

SECURE_NATS_PORT = 4223
SECURE_NATS_MONITOR_PORT = 8223
MANAGER_USER = "manager"
NAME = "secure-nats"


def agent_permissions(
    agent_id: str, prefix: str = "kernlet", stream: str = "KERNLET_EVENTS"
) -> dict[str, list[str]]:
    """What agent ``agent_id`` may publish and subscribe: its own events and heartbeat, the
    replies to its requests, its event stream's creation; its own commands and inbox."""
    return {
        "publish": [f"{prefix}.events.{agent_id}.>", f"{prefix}.heartbeat.{agent_id}",
                    "_INBOX.>", f"$JS.API.STREAM.CREATE.{stream}",
                    f"$JS.API.STREAM.UPDATE.{stream}"],
        "subscribe": [f"{prefix}.agent.{agent_id}.cmd.*", f"_INBOX_{agent_id}.>"],
    }


def manager_permissions(prefix: str = "kernlet") -> dict[str, list[str]]:
    """What a manager may do: command every agent, hear every event and heartbeat."""
    return {"publish": [f"{prefix}.agent.*.cmd.*"],
            "subscribe": [f"{prefix}.events.>", f"{prefix}.heartbeat.*", "_INBOX.>"]}


def authorization(users: Mapping[str, tuple[str, Mapping[str, Any] | None]]) -> str:
    """nats-server's ``authorization`` block: user -> (password, permissions or None for
    all)."""
    entries = []
    for user, (password, permissions) in users.items():
        entry: dict[str, Any] = {"user": user, "password": password}
        if permissions is not None:
            entry["permissions"] = dict(permissions)
        entries.append(entry)
    return "authorization " + json.dumps({"users": entries}, indent=1)


@dataclass(frozen=True)
class SecureNats:
    """Where a prepared secure nats-server lives and how it answers."""

    root: Path
    port: int = SECURE_NATS_PORT
    monitor_port: int = SECURE_NATS_MONITOR_PORT

    @property
    def url(self) -> str:
        return f"tls://{LOOPBACK}:{self.port}"

    @property
    def conf(self) -> Path:
        return self.root / "nats.conf"

    def agent_file(self, agent_id: str) -> Path:
        return self.root / f"agent-{agent_id}.toml"

    @property
    def manager_file(self) -> Path:
        return self.root / "manager.json"

    def service(self) -> Service:
        """As a half-stack service: the state directory's ``secure-nats/`` is ``root``."""
        return Service(
            name=NAME,
            endpoint=f"{LOOPBACK}:{self.port} (tls), http :{self.monitor_port}",
            binary="nats-server",
            package="nats-server",
            command=lambda data: ["-c", str(data / "nats.conf")],
            probe=partial(probe_nats, LOOPBACK, self.port, self.monitor_port),
        )


def prepare(
    state_dir: Path,
    agents: Iterable[str],
    *,
    mtls: bool = False,
    port: int = SECURE_NATS_PORT,
    monitor_port: int = SECURE_NATS_MONITOR_PORT,
    prefix: str = "kernlet",
    stream: str = "KERNLET_EVENTS",
    days: int = 30,
) -> SecureNats:
    """Write the CA, certificates, passwords and configs for ``agents`` and a manager."""
    root = state_dir / NAME
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    setup = SecureNats(root, port, monitor_port)
    ca = CA(root, "ca", days=days)
    server = ca.issue("nats-server", server=True)
    users: dict[str, tuple[str, Mapping[str, Any] | None]] = {
        agent: (secrets.token_urlsafe(18), agent_permissions(agent, prefix, stream))
        for agent in agents
    }
    users[MANAGER_USER] = (secrets.token_urlsafe(18), manager_permissions(prefix))
    tls = {"cert_file": str(server.cert), "key_file": str(server.key),
           "ca_file": str(ca.path), "verify": mtls, "timeout": 5}
    setup.conf.write_text(
        f"listen: {LOOPBACK}:{port}\nhttp: {LOOPBACK}:{monitor_port}\n"
        f"jetstream {{ store_dir: {json.dumps(str(root / 'js'))} }}\n"
        f"tls {json.dumps(tls)}\n{authorization(users)}\n"
    )
    setup.conf.chmod(0o600)
    for user, (password, _) in users.items():
        client = ca.issue(user, server=False) if mtls else None
        facts = {"url": setup.url, "user": user, "password": password, "tls-ca": str(ca.path)}
        if client is not None:
            facts |= {"tls-cert": str(client.cert), "tls-key": str(client.key)}
        if user == MANAGER_USER:
            setup.manager_file.write_text(json.dumps(facts, indent=1) + "\n")
            setup.manager_file.chmod(0o600)
            continue
        lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in facts.items())
        setup.agent_file(user).write_text(f"[nats]\n{lines}")
        setup.agent_file(user).chmod(0o600)
    return setup
