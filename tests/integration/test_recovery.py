"""An agent that stops or dies comes back knowing what it had: re-adopts, cleans, loses nothing."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, docker, wait_for
from integration.servers import PrivateNats
from kernlet.client import KernletClient
from kernlet.errors import AgentUnavailable, KernelNotRunning

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_agent(halfstack: None, tmp_path: Path) -> Iterator[AgentProcess]:
    """An agent of its own per test (these tests kill and restart it)."""
    proc = AgentProcess(
        tmp_path, f"rec-{uuid.uuid4().hex[:8]}",
        extra="[debug]\nfault-injection = true\n",
    )
    proc.config.write_text(proc.config.read_text().replace(
        "[agent]\n", "[agent]\nreconcile-interval = 1\norphan-grace = 2\n"))
    proc.start()
    yield proc
    proc.cleanup()


@pytest.fixture
async def fclient(fresh_agent: AgentProcess) -> AsyncIterator[KernletClient]:
    async with KernletClient(NATS_URL, agent_id=fresh_agent.agent_id, timeout=60) as c:
        yield c


async def last_event(client: KernletClient, kernel_id: str) -> dict[str, Any] | None:
    log = await client.events(kernel_id)
    return log[-1] if log and log[-1]["type"] == "kernel_terminated" else None


async def stdout_of(client: KernletClient, kernel_id: str, code: str) -> str:
    res = await client.execute(kernel_id, code)
    return "".join(d for k, d in res["console"] if k == "stdout")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_restart_readopts_running_kernel_with_its_state(
    fclient: KernletClient, fresh_agent: AgentProcess, sig: int
) -> None:
    k = await fclient.create_kernel(IMAGE)
    await fclient.execute(k["id"], "secret = 'kept across agent restarts'")
    fresh_agent.stop(sig)
    # stopping the agent never touches the kernels
    assert docker("inspect", "-f", "{{.State.Running}}", k["container_id"]).strip() == "true"
    fresh_agent.start()
    assert await stdout_of(fclient, k["id"], "print(secret)") == "kept across agent restarts\n"
    (listed,) = [x for x in await fclient.list_kernels() if x["id"] == k["id"]]
    assert listed["state"] == "running" and listed["container_id"] == k["container_id"]
    await fclient.destroy_kernel(k["id"])
    assert fresh_agent.containers() == [] and fresh_agent.scratch_dirs() == []


async def test_container_exited_while_agent_was_down(
    fclient: KernletClient, fresh_agent: AgentProcess
) -> None:
    k = await fclient.create_kernel(IMAGE)
    fresh_agent.stop(signal.SIGKILL)
    docker("kill", "--signal", "KILL", k["container_id"])
    fresh_agent.start()
    last = await wait_for(lambda: last_event(fclient, k["id"]))
    assert last["payload"]["exit_code"] == 137
    assert last["payload"]["reason"] == "self-terminated"
    await wait_for(lambda: fresh_agent.containers() == [] and fresh_agent.scratch_dirs() == [])


async def test_container_removed_while_agent_was_down(
    fclient: KernletClient, fresh_agent: AgentProcess
) -> None:
    k = await fclient.create_kernel(IMAGE)
    fresh_agent.stop(signal.SIGKILL)
    docker("rm", "-f", k["container_id"])
    fresh_agent.start()
    last = await wait_for(lambda: last_event(fclient, k["id"]))
    assert last["payload"]["reason"] == "container-not-found"
    await wait_for(lambda: fresh_agent.scratch_dirs() == [])
    with pytest.raises(KernelNotRunning):
        await fclient.execute(k["id"], "1")


async def test_orphans_removed_after_grace_and_other_agents_untouched(
    fclient: KernletClient, fresh_agent: AgentProcess
) -> None:
    mine = docker("run", "-d", "--label", f"ai.kernlet.agent-id={fresh_agent.agent_id}",
                  "--label", "ai.kernlet.kernel-id=ghost", IMAGE, "sleep", "300").strip()
    theirs = docker("run", "-d", "--label", "ai.kernlet.agent-id=someone-else",
                    "--label", "ai.kernlet.kernel-id=ghost", IMAGE, "sleep", "300").strip()
    try:
        await wait_for(lambda: mine not in " ".join(fresh_agent.containers()), timeout=20)
        assert docker("inspect", "-f", "{{.State.Running}}", theirs).strip() == "true"
    finally:
        subprocess.run(["docker", "rm", "-f", mine, theirs], capture_output=True, check=False)


async def test_crashed_kernel_actor_is_rebuilt_from_its_stream(
    fclient: KernletClient, fresh_agent: AgentProcess
) -> None:
    k = await fclient.create_kernel(IMAGE)
    await fclient.execute(k["id"], "n = 6 * 7")
    await fclient.call("debug_fault", kernel_id=k["id"])

    async def incident() -> bool:
        return any(e["type"] == "kernel_actor_restarted" for e in await fclient.events(k["id"]))

    await wait_for(incident)
    assert await stdout_of(fclient, k["id"], "print(n)") == "42\n"
    await fclient.destroy_kernel(k["id"])


async def jetstream_event_ids(url: str, agent_id: str) -> list[str]:
    """Every event id the JetStream stream holds for this agent, in order."""
    import nats

    from kernlet.events import unpack

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(f"kernlet.events.{agent_id}.>", ordered_consumer=True)
        ids: list[str] = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except Exception:
                break
            ids.append(unpack(msg.data)["id"])
        return ids
    finally:
        await nc.close()


async def test_agent_starts_without_nats_and_delivers_events_later(
    halfstack: None, tmp_path: Path
) -> None:
    bus = PrivateNats(tmp_path / "nats")
    bus.start()
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(tmp_path / "agent", f"nonats-{uuid.uuid4().hex[:8]}",
                         extra=f'[nats]\nurl = "{bus.url}"\n')
    try:
        agent.start()
        async with KernletClient(bus.url, agent_id=agent.agent_id, timeout=60) as c:
            k = await c.create_kernel(IMAGE)
        bus.stop()
        agent.stop(signal.SIGKILL)
        agent.start()  # NATS is down: the agent starts anyway
        # the kernel dies while NATS is down: its events wait in the log
        docker("kill", "--signal", "KILL", k["container_id"])
        await wait_for(lambda: agent.scratch_dirs() == [], timeout=30)
        bus.start()
        async with KernletClient(bus.url, agent_id=agent.agent_id, timeout=60) as c:

            async def answers() -> bool:
                try:
                    return bool(await c.ping())
                except AgentUnavailable:
                    return False

            await wait_for(answers, timeout=30)
            await wait_for(lambda: last_event(c, k["id"]), timeout=30)
            logged = [e["id"] for e in await c.events(k["id"])]
        await asyncio.sleep(3)  # let the outbox catch up
        delivered = await jetstream_event_ids(bus.url, agent.agent_id)
        assert set(logged) <= set(delivered)
        assert len(delivered) == len(set(delivered)), "JetStream holds a duplicate"
    finally:
        agent.cleanup()
        bus.stop()


async def test_root_actor_death_exits_non_zero_and_is_recorded(
    fclient: KernletClient, fresh_agent: AgentProcess
) -> None:
    """Never a live process with a dead core: the agent exits 1 (systemd restarts it), and
    the restarted agent's log holds the incident, with its kernel re-adopted."""
    k = await fclient.create_kernel(IMAGE)
    await fclient.execute(k["id"], "n = 7")
    res = await fclient.call("debug_fault", kernel_id=k["id"], actor="agent")
    assert res == {"injected": True, "actor": "agent"}
    assert fresh_agent.proc is not None
    assert await asyncio.to_thread(fresh_agent.proc.wait, 30) == 1
    assert "the agent actor is dead" in fresh_agent.log.read_text()
    fresh_agent.start()
    died = [e for e in await fclient.events("_agent")
            if e["type"] == "agent_error" and "agent actor died" in e["payload"]["message"]]
    assert len(died) == 1 and "_InjectedRootDeath" in died[0]["payload"]["traceback"]
    assert await stdout_of(fclient, k["id"], "print(n)") == "7\n"
    await fclient.destroy_kernel(k["id"])
