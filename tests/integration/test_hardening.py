"""Container hardening, seen from inside real kernels.

Every kernel: no capability, no-new-privileges, the default seccomp profile, a pids limit, no
Docker socket and none of the agent's var dir but its own two dirs, ports on the bind host
only. As options: ``container.network = "none"`` (loopback only), ``"internal"`` (the agent's
network without egress), and ``container.read-only-root`` (/usr refuses writes, /home/work and
/tmp take them).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, docker
from kernlet.client import KernletClient

pytestmark = pytest.mark.integration


async def stdout(client: KernletClient, kernel_id: str, code: str) -> str:
    res = await client.execute(kernel_id, code)
    assert res["status"] == "finished", res
    return "".join(str(d) for k, d in res["console"] if k == "stdout")


def hardened_agent(root: Path, container: str) -> AgentProcess:
    proc = AgentProcess(root, f"hard-{uuid.uuid4().hex[:8]}")
    proc.config.write_text(proc.config.read_text().replace(
        "[container]\n", f"[container]\n{container}", 1))
    return proc


@pytest.fixture
async def kernel_in(halfstack: None, tmp_path: Path,
                    request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    agent = hardened_agent(tmp_path, request.param)
    agent.start()
    try:
        async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=120) as c:
            k = await c.create_kernel(IMAGE)
            yield (c, agent, k), k["container_id"]
            await c.destroy_kernel(k["id"])
    finally:
        agent.cleanup()


@pytest.mark.parametrize("kernel_in", [""], indirect=True)
async def test_a_kernel_holds_no_privilege_and_sees_nothing_of_the_agent(
        kernel_in: Any) -> None:
    (client, agent, k), cid = kernel_in
    probe = f"""
import os
status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines()
              if ':\\t' in l)
mounts = [l.split()[4] for l in open('/proc/self/mountinfo')]
print(status['CapEff'].strip(), status['CapBnd'].strip(), status['NoNewPrivs'].strip(),
      status['Seccomp'].strip())
print(os.path.exists('/var/run/docker.sock'), os.path.exists('/run/docker.sock'),
      os.path.exists({str(agent.var_dir)!r}), os.path.exists({str(agent.var_dir / 'log' / 'events.sqlite')!r}))
print(sorted(m for m in mounts if m.startswith(('/home', '/opt', '/var'))))
"""
    caps, sockets, mounts = (await stdout(client, k["id"], probe)).splitlines()
    assert caps == "0000000000000000 0000000000000000 1 2"  # no caps, no-new-privs, filter
    assert sockets == "False False False False"
    assert mounts == ("['/home/config', '/home/work', '/opt/kernlet/ipc', "
                      "'/opt/kernlet/lib/kernlet']")  # /home/config: read-only facts
    host = json.loads(docker("inspect", "--format", "{{json .HostConfig}}", cid))
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"] and not host["Privileged"]
    assert host["SecurityOpt"] == ["no-new-privileges"] and host["PidsLimit"] > 0
    assert {b["HostIp"] for bs in host["PortBindings"].values() for b in bs} == {"127.0.0.1"}


@pytest.mark.parametrize("kernel_in", ['network = "none"\n'], indirect=True)
async def test_network_none_leaves_loopback_only(kernel_in: Any) -> None:
    (client, _, k), cid = kernel_in
    assert await stdout(client, k["id"], "import os; print(sorted(os.listdir('/sys/class/net')))"
                        ) == "['lo']\n"
    host = json.loads(docker("inspect", "--format", "{{json .HostConfig}}", cid))
    assert host["NetworkMode"] == "none" and not host["PortBindings"]


@pytest.mark.parametrize("kernel_in", ['network = "internal"\n'], indirect=True)
async def test_network_internal_has_no_egress_and_publishes_nothing(kernel_in: Any) -> None:
    (client, _, k), cid = kernel_in
    net = json.loads(docker("network", "inspect", "kernlet-internal"))[0]
    assert net["Internal"] is True
    assert cid in net["Containers"]
    host = json.loads(docker("inspect", "--format", "{{json .HostConfig}}", cid))
    assert host["NetworkMode"] == "kernlet-internal" and not host["PortBindings"]
    names = await stdout(client, k["id"], "import os; print(sorted(os.listdir('/sys/class/net')))")
    assert "lo" in names and len(eval(names)) == 2  # loopback and the internal bridge


@pytest.mark.parametrize("kernel_in", ["read-only-root = true\n"], indirect=True)
async def test_read_only_root_refuses_usr_and_keeps_work_and_tmp(kernel_in: Any) -> None:
    (client, _, k), cid = kernel_in
    probe = """
import errno
for path in ('/usr/x', '/home/work/x', '/tmp/x'):
    try:
        open(path, 'w').write('x')
        print(path, 'ok')
    except OSError as exc:
        print(path, errno.errorcode[exc.errno])
"""
    assert await stdout(client, k["id"], probe) == (
        "/usr/x EROFS\n/home/work/x ok\n/tmp/x ok\n")
    host = json.loads(docker("inspect", "--format", "{{json .HostConfig}}", cid))
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
