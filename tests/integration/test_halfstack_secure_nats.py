"""``kernlet halfstack secure-nats``: the shipped TLS + accounts server, used as an operator would.

`up` (with client certificates required) makes the CA, accounts and configs and starts the
server; a real agent configured with the section `up` wrote serves a ping through it to the
manager's account; another agent's account cannot serve this agent's commands; `down` stops
the server by its pid and leaves nothing answering.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from integration.conftest import AgentProcess, wait_for
from integration.servers import free_port, port_open
from kernlet.client import KernletClient
from kernlet.errors import AgentTimeout, AgentUnavailable

pytestmark = pytest.mark.timeout(180)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernlet.cli", "halfstack", "secure-nats", *args],
                          capture_output=True, text=True, timeout=90, check=False)


def manager_tls(facts: dict[str, str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=facts["tls-ca"])
    ctx.load_cert_chain(facts["tls-cert"], facts["tls-key"])
    return ctx


async def test_up_serves_an_agent_through_tls_and_down_stops_it(
    halfstack: None, tmp_path: Path
) -> None:
    state, port, monitor = tmp_path / "state", free_port(), free_port()
    a, b = f"hsn-a-{uuid.uuid4().hex[:6]}", f"hsn-b-{uuid.uuid4().hex[:6]}"
    where = ["--state-dir", str(state), "--port", str(port), "--monitor-port", str(monitor)]
    up = cli("up", *where, "--agent", a, "--agent", b, "--mtls")
    agent: AgentProcess | None = None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert port_open(port)
        root = state / "secure-nats"
        section = (root / f"agent-{a}.toml").read_text()
        assert f'url = "tls://127.0.0.1:{port}"' in section and "tls-cert" in section
        assert (root / "nats.conf").stat().st_mode & 0o077 == 0  # passwords inside
        facts = json.loads((root / "manager.json").read_text())
        (tmp_path / "a").mkdir()
        agent = AgentProcess(tmp_path / "a", a, section)
        agent.start()
        async with KernletClient(facts["url"], agent_id=a, timeout=30, user=facts["user"],
                                 password=facts["password"], tls=manager_tls(facts)) as c:
            await wait_for(lambda: "NATS connected" in agent.log.read_text())  # type: ignore[union-attr]
            assert (await c.ping("through the halfstack"))["agent_id"] == a
        # agent b's account may not even ask agent a anything: the server drops the request
        b_facts = dict(line.split(" = ", 1) for line in
                       (root / f"agent-{b}.toml").read_text().splitlines()[1:])
        b_facts = {k: json.loads(v) for k, v in b_facts.items()}
        async with KernletClient(facts["url"], agent_id=a, timeout=3, user=b,
                                 password=b_facts["password"], tls=manager_tls(b_facts)) as c:
            with pytest.raises((AgentTimeout, AgentUnavailable)):
                await c.ping()
        status = cli("status", *where)
        assert status.returncode == 0 and "started by kernlet" in status.stdout
    finally:
        if agent is not None:
            agent.cleanup()
        down = cli("down", *where)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped" in down.stdout
    assert not port_open(port)
    assert cli("status", *where).returncode == 1
