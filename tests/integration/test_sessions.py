"""Multi-container sessions on the real halfstack (docs/sessions.md): a session's kernels on
their own bridge network by hostname, ssh between them, the cluster environment and
cluster.json, the network's end with the last kernel, an agent crash mid-session and
mid-creation, a preopened port through its host port, and bad cluster input."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, docker, wait_for
from kernlet.client import KernletClient
from kernlet.errors import InvalidRequest

pytestmark = pytest.mark.integration

PORTS = "[container]\nport-range = [32600, 32799]\n"


def session_agent(root: Path, extra: str = "") -> AgentProcess:
    proc = AgentProcess(root, f"ses-{uuid.uuid4().hex[:8]}", extra=PORTS + extra)
    proc.config.write_text(proc.config.read_text().replace(
        "[agent]\n", "[agent]\nreconcile-interval = 1\norphan-grace = 2\n"
                     'advertised-host = "127.0.0.1"\n'))
    # AgentProcess puts its own [container] first: fold ours into it
    text = proc.config.read_text()
    text = text.replace(PORTS, "").replace("[container]\n", PORTS, 1)
    proc.config.write_text(text)
    return proc


def networks(agent: AgentProcess) -> list[str]:
    out = docker("network", "ls", "-q", "--filter", f"label=ai.kernlet.agent-id={agent.agent_id}")
    return out.split()


def cleanup(agent: AgentProcess) -> None:
    agent.cleanup()
    for net in networks(agent):
        subprocess.run(["docker", "network", "rm", net], capture_output=True, check=False)


@pytest.fixture
def sagent(halfstack: None, tmp_path: Path) -> Iterator[AgentProcess]:
    proc = session_agent(tmp_path)
    proc.start()
    yield proc
    cleanup(proc)


@pytest.fixture
async def sclient(sagent: AgentProcess) -> AsyncIterator[KernletClient]:
    async with KernletClient(NATS_URL, agent_id=sagent.agent_id, timeout=120) as c:
        yield c


async def out(client: KernletClient, kernel_id: str, code: str) -> str:
    res = await client.execute(kernel_id, code)
    text = "".join(d for k, d in res["console"] if k in ("stdout", "stderr"))
    assert res["status"] == "finished", text
    return text


async def create_session(client: KernletClient, n: int, **cluster: Any) -> list[dict[str, Any]]:
    ids = [f"k{uuid.uuid4().hex[:10]}" for _ in range(n)]
    results = await client.call("create_kernels", session_id=f"s{uuid.uuid4().hex[:8]}",
                                kernel_ids=ids, configs=[{"image": IMAGE, "mem": 256 * 1024**2}] * n,
                                cluster=cluster)
    kernels = list(results["kernels"])
    assert all(k["ok"] for k in kernels), kernels
    return kernels


SERVER = """
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen()
def serve():
    while True:
        c, _ = s.accept(); c.sendall(socket.gethostname().encode()); c.close()
threading.Thread(target=serve, daemon=True).start()
print("listening")
"""

CLIENT = """
import socket
for host in ("sub1", "sub2"):
    with socket.create_connection((host, 9000), timeout=10) as c:
        print(host, c.recv(100).decode())
"""


async def test_three_kernel_session(sclient: KernletClient, sagent: AgentProcess) -> None:
    main, sub1, sub2 = await create_session(sclient, 3)
    (net,) = networks(sagent)
    for k in (sub1, sub2):
        assert await out(sclient, k["id"], SERVER) == "listening\n"
    # by hostname over TCP: each answers with its own hostname
    assert await out(sclient, main["id"], CLIENT) == "sub1 sub1\nsub2 sub2\n"
    # ssh from main1 to sub1, no password prompt (BatchMode refuses to ask)
    ssh = await out(sclient, main["id"], (
        "import subprocess\n"
        "r = subprocess.run(['ssh', '-o', 'BatchMode=yes', 'sub1', 'hostname'],"
        " capture_output=True, text=True, timeout=60)\n"
        "print(r.returncode, r.stdout.strip(), r.stderr.strip())"))
    assert ssh.strip() == "0 sub1", ssh
    # every kernel sees the cluster environment and cluster.json
    for k, (role, idx, host) in zip((main, sub1, sub2), (("main", 1, "main1"), ("sub", 1, "sub1"),
                                                         ("sub", 2, "sub2")), strict=True):
        text = await out(sclient, k["id"], (
            "import os, json\n"
            "print(json.dumps({k: v for k, v in os.environ.items()"
            " if k.startswith('KERNLET_CLUSTER')}))\n"
            "print(open(os.environ['KERNLET_CLUSTER_JSON']).read())"))
        env_line, _, rest = text.partition("\n")
        env = json.loads(env_line)
        assert env["KERNLET_CLUSTER_ROLE"] == role and env["KERNLET_CLUSTER_IDX"] == str(idx)
        assert env["KERNLET_CLUSTER_HOST"] == host and env["KERNLET_CLUSTER_SIZE"] == "3"
        assert env["KERNLET_CLUSTER_HOSTS"] == "main1,sub1,sub2"
        facts = json.loads(rest)
        assert (facts["role"], facts["idx"], facts["host"], facts["size"]) == (role, idx, host, 3)
        assert [h["host"] for h in facts["hosts"]] == ["main1", "sub1", "sub2"]
    # the ssh server is on the session network only: nothing of it published on the host
    ports = docker("inspect", "-f", "{{json .NetworkSettings.Ports}}", main["container_id"])
    assert "2200" not in ports
    # one kernel's destroy leaves the others and the network; the last one's removes it
    await sclient.destroy_kernel(sub2["id"])
    assert await out(sclient, main["id"], "import socket; print(socket.gethostbyname('sub1'))")
    assert networks(sagent) == [net]
    await sclient.destroy_kernel(sub1["id"])
    await sclient.destroy_kernel(main["id"])
    assert networks(sagent) == []
    assert sagent.containers() == []
    assert not list((sagent.var_dir / "sessions").glob("*"))


async def test_kill_9_mid_session_readopts_on_its_network(
    sclient: KernletClient, sagent: AgentProcess
) -> None:
    main, sub1 = await create_session(sclient, 2, ssh=False)
    assert await out(sclient, sub1["id"], SERVER) == "listening\n"
    sagent.stop(signal.SIGKILL)
    sagent.start()
    probe = ("import socket\nwith socket.create_connection(('sub1', 9000), timeout=10) as c:"
             " print(c.recv(100).decode())")
    assert await out(sclient, main["id"], probe) == "sub1\n"
    await asyncio.sleep(3)  # past orphan-grace: the reconciler keeps the held network
    assert len(networks(sagent)) == 1
    await sclient.destroy_kernel(main["id"])
    await sclient.destroy_kernel(sub1["id"])
    assert networks(sagent) == [] and sagent.containers() == []


async def test_crash_mid_creation_leaves_no_network(halfstack: None, tmp_path: Path) -> None:
    """The agent dies (like SIGKILL) once the second kernel's container is in the log; at the
    restart both kernels are rolled back and the session's network goes with them."""
    agent = session_agent(tmp_path, "[debug]\ncrash-after = \"container_created:2\"\n")
    agent.start()
    try:
        async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=20) as client:
            with pytest.raises(Exception):  # noqa: B017 - the agent dies under the call
                await create_session(client, 3)
            assert agent.proc is not None
            agent.proc.wait(30)
            assert len(networks(agent)) == 1  # the crash left it
            agent.config.write_text(agent.config.read_text().replace(
                'crash-after = "container_created:2"', ""))
            agent.start()
            await wait_for(lambda: networks(agent) == [] and agent.containers() == []
                           and agent.scratch_dirs() == [], 60)
            kernels = await client.list_kernels(all=True)
            assert len(kernels) == 3
            assert {k["reason"] for k in kernels} == {"agent-restarted-during-creation"}
    finally:
        cleanup(agent)


@pytest.mark.parametrize("in_session", [False, True])
async def test_preopened_port_answers_through_its_host_port(
    sclient: KernletClient, sagent: AgentProcess, in_session: bool
) -> None:
    if in_session:  # published from the session's own bridge network
        (k,) = await sclient.create_kernels([{"image": IMAGE, "preopen_ports": [8080]}],
                                            cluster={"ssh": False})
        assert k["ok"], k
    else:
        k = await sclient.create_kernel(IMAGE, preopen_ports=[8080])
    (port,) = [p for p in k["service_ports"] if p["protocol"] == "preopen"]
    assert port["container_port"] == 8080 and 32600 <= port["host_port"] <= 32799
    assert k["host"] == "127.0.0.1"
    await out(sclient, k["id"], SERVER.replace("9000", "8080"))

    def answer() -> str:
        with socket.create_connection((k["host"], port["host_port"]), timeout=5) as c:
            return c.recv(100).decode()

    assert await asyncio.to_thread(answer)
    await sclient.destroy_kernel(k["id"])
    assert networks(sagent) == [] and sagent.containers() == []


@pytest.mark.parametrize(("cluster", "says"), [
    ({"hostnames": ["a", "a"]}, "cluster.hostnames repeat ['a']"),
    ({"roles": ["main"]}, "cluster.roles has 1 role(s) for 2 kernel(s)"),
    ({"mode": "swarm"}, "cluster.mode"),
    ({"mode": "multi-node"}, "multi-node"),
    ({"network": "nobody-made-this"}, "was not made by create_local_network"),
])
async def test_bad_cluster_input_is_refused_with_nothing_made(
    sclient: KernletClient, sagent: AgentProcess, cluster: dict[str, Any], says: str
) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(says)):
        await sclient.call("create_kernels", session_id="bad", kernel_ids=["b1", "b2"],
                           configs=[{"image": IMAGE}] * 2, cluster=cluster)
    assert networks(sagent) == [] and sagent.containers() == []
    assert await sclient.list_kernels() == []


async def test_manager_owned_network(sclient: KernletClient, sagent: AgentProcess) -> None:
    name = f"mgr-{uuid.uuid4().hex[:8]}"
    res = await sclient.create_local_network(name)
    assert res == {"network": name, "created": True}
    (k,) = await create_session(sclient, 1, network=name, ssh=False)
    with pytest.raises(InvalidRequest, match="held by kernel"):
        await sclient.call("destroy_local_network", network=name)
    await sclient.destroy_kernel(k["id"])
    assert len(networks(sagent)) == 1  # the manager's: kept without kernels
    assert await sclient.destroy_local_network(name) == {"network": name, "destroyed": True}
    assert networks(sagent) == []
