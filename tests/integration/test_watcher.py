"""The watcher of a live agent on the real halfstack: every endpoint, tokens, schemathesis.

The module's agent runs with ``[watcher] port = <free port>, token = "t0ken"``. Tests run in
file order and build on each other's kernels: a running one, a destroyed one, one whose create
failed; then the reset, then schemathesis. Shutdown gets an agent of its own.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess, docker, wait_for
from kernlet.client import KernletClient
from kernlet.errors import ImageNotFound

pytestmark = pytest.mark.integration

TOKEN = "t0ken"
AUTH = {"X-Kernlet-Token": TOKEN}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class WatchedAgent(AgentProcess):
    """An agent process whose watcher listens on a known free port, with the test token."""

    def __init__(self, root: Path, token: str | None = TOKEN) -> None:
        self.port = free_port()
        token_line = f'token = "{token}"\n' if token else ""
        super().__init__(root, f"wtest-{uuid.uuid4().hex[:8]}",
                         extra=f"[watcher]\nport = {self.port}\n{token_line}")
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)
        assert f"watcher listening on {self.url}/" in self.log.read_text()


@pytest.fixture(scope="module")
def wagent(halfstack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WatchedAgent]:
    proc = WatchedAgent(tmp_path_factory.mktemp("watched"))
    proc.start()
    yield proc
    proc.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


@pytest.fixture
async def kc(wagent: WatchedAgent) -> AsyncIterator[KernletClient]:
    async with KernletClient(NATS_URL, agent_id=wagent.agent_id, timeout=90) as c:
        yield c


async def get_json(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as r:
        assert r.status == status, await r.text()
        return await r.json()


async def post(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None,
               **kw: Any) -> tuple[int, Any]:
    async with http.post(url, headers=headers or {}, **kw) as r:
        return r.status, await r.json()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}")


class EventStream:
    """Reads ``GET /events`` in the background into a list of (event name, data)."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http, self._url = http, url
        self.items: list[tuple[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventStream:
        self._task = asyncio.create_task(self._read())
        await wait_for(lambda: any(n == "snapshot" for n, _ in self.items), 10, 0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        async with self._http.get(self._url, timeout=aiohttp.ClientTimeout(total=None)) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            name = ""
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    self.items.append((name, json.loads(line[6:])))

    def states_of(self, kernel_id: str) -> list[str]:
        return [d["event"]["state"] for n, d in self.items
                if n == "kernel" and d["event"]["kernel_id"] == kernel_id]


# -- read-only ---------------------------------------------------------------------------------


async def test_health_status_openapi_and_dashboard(
    wagent: WatchedAgent, http: aiohttp.ClientSession
) -> None:
    h = await get_json(http, f"{wagent.url}/healthz")
    assert h["ok"] is True
    assert set(h["checks"]) == {"agent", "docker", "event_log", "loop", "nats", "reconcile"}
    assert all(c["ok"] for c in h["checks"].values())

    s = await get_json(http, f"{wagent.url}/status")
    assert s["agent"]["id"] == wagent.agent_id and s["agent"]["uptime_seconds"] > 0
    assert s["resources"]["capacity"]["cpu"] >= 1 and s["resources"]["capacity"]["mem"] > 0
    assert s["nats"]["connected"] is True
    assert s["event_log"]["events"] >= 1  # agent_started

    spec = await get_json(http, f"{wagent.url}/openapi.json")
    assert spec["openapi"].startswith("3.") and "/kernels/{kernel_id}/destroy" in spec["paths"]

    async with http.get(f"{wagent.url}/") as r:
        assert r.status == 200 and "<title>kernlet watcher</title>" in await r.text()


async def test_kernels_in_several_states_history_live_events_and_metrics(
    wagent: WatchedAgent, http: aiohttp.ClientSession, kc: KernletClient
) -> None:
    u = wagent.url
    tag = uuid.uuid4().hex[:6]
    run_id, gone_id, bad_id = f"w-run-{tag}", f"w-gone-{tag}", f"w-bad-{tag}"
    async with EventStream(http, f"{u}/events") as stream:
        await kc.create_kernel(IMAGE, kernel_id=run_id, cpu=1, mem=256 * 1024**2)
        res = await kc.run(run_id, "print(sum(range(10**6)))")
        assert res["status"] == "finished"
        await kc.create_kernel(IMAGE, kernel_id=gone_id, cpu=0.5)
        status, body = await post(http, f"{u}/kernels/{gone_id}/destroy", AUTH,
                                  json={"reason": "test-destroy"})
        assert status == 200 and body["id"] == gone_id and body["reason"] == "test-destroy"
        with pytest.raises(ImageNotFound):
            await kc.create_kernel("kernlet/no-such-image:0", kernel_id=bad_id)

        # the dashboard's stream saw each kernel appear and change state, in order
        await wait_for(lambda: "terminated" in stream.states_of(gone_id), 10)
        states = stream.states_of(run_id)
        assert states[:4] == ["preparing", "creating", "creating", "running"]
        assert stream.states_of(gone_id)[-2:] == ["terminating", "terminated"]
        kernel_msgs = [d for n, d in stream.items if n == "kernel" and d["kernel"]["id"] == run_id]
        assert kernel_msgs[-1]["kernel"]["executions"] == 1
        await wait_for(lambda: any(n == "status" for n, _ in stream.items), 10)

    kernels = {k["id"]: k for k in (await get_json(http, f"{u}/kernels"))["kernels"]}
    assert kernels[run_id]["state"] == "running" and kernels[run_id]["executions"] == 1
    assert kernels[gone_id]["state"] == "terminated"
    assert kernels[gone_id]["reason"] == "test-destroy"
    assert kernels[bad_id]["state"] == "terminated" and kernels[bad_id]["reason"]

    detail = await get_json(http, f"{u}/kernels/{run_id}")
    types = [e["type"] for e in detail["events"]]
    assert types == ["kernel_preparing", "kernel_creating", "container_created",
                     "kernel_started", "execution_started", "execution_finished"]
    assert [e["seq"] for e in detail["events"]] == list(range(1, 7))
    assert detail["live"] is True and detail["container_id"]
    gone = await get_json(http, f"{u}/kernels/{gone_id}")
    assert gone["events"][-1]["type"] == "kernel_terminated"
    assert gone["events"][-1]["payload"]["reason"] == "test-destroy" and gone["live"] is False
    missing = await get_json(http, f"{u}/kernels/w-never-{tag}", status=404)
    assert missing["error"]["type"] == "KernelNotFound"

    # per-kernel usage arrives with the next sample (every 2 s)
    async def sampled() -> bool:
        async with http.get(f"{u}/metrics") as r:
            return f'kernlet_kernel_memory_bytes{{kernel_id="{run_id}"}}' in await r.text()

    await wait_for(sampled, 10, 0.5)
    async with http.get(f"{u}/metrics") as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    assert metric(text, 'kernlet_kernels{state="running"}') == 1
    assert metric(text, 'kernlet_kernels{state="terminated"}') == 2
    assert metric(text, f'kernlet_kernel_memory_bytes{{kernel_id="{run_id}"}}') > 1024**2
    assert metric(text, f'kernlet_kernel_cpu_seconds_total{{kernel_id="{run_id}"}}') > 0
    assert f'kernel_id="{gone_id}"' not in text  # terminated kernels have no usage series
    t = "kernlet_lifecycle_transitions_total"
    assert metric(text, f'{t}{{from_state="creating",to_state="running"}}') == 2
    assert metric(text, f'{t}{{from_state="terminating",to_state="terminated"}}') >= 2
    assert metric(text, "kernlet_kernel_create_seconds_count") == 2
    assert 0 < metric(text, "kernlet_kernel_create_seconds_sum") < 120
    assert metric(text, 'kernlet_executions_total{status="finished"}') == 1
    assert metric(text, "kernlet_event_log_events") >= 15
    assert metric(text, "kernlet_nats_connected") == 1
    assert metric(text, "kernlet_reconcile_age_seconds") < 30

    s = await get_json(http, f"{u}/status")
    assert s["kernels"]["live"] == 1 and s["resources"]["used"]["cpu"] == 1.0
    assert s["usage"][run_id]["memory_bytes"] > 0


async def test_token_rules_on_a_live_agent(
    wagent: WatchedAgent, http: aiohttp.ClientSession
) -> None:
    u = wagent.url
    live = [k["id"] for k in (await get_json(http, f"{u}/kernels"))["kernels"]
            if k["state"] == "running"]
    assert live, "the previous test leaves a running kernel"
    for path in (f"/kernels/{live[0]}/destroy", "/agent/reset", "/agent/shutdown"):
        status, body = await post(http, u + path)
        assert status == 401 and "X-Kernlet-Token" in body["error"]["message"]
        status, body = await post(http, u + path, {"X-Kernlet-Token": "t0ken-not"})
        assert status == 403
    status, _ = await post(http, f"{u}/kernels/no-such-kernel/destroy", AUTH)
    assert status == 404
    # nothing happened: the kernel runs, the agent answers
    k = await get_json(http, f"{u}/kernels/{live[0]}")
    assert k["state"] == "running"
    assert (await get_json(http, f"{u}/healthz"))["ok"] is True


async def test_reset_destroys_every_kernel(
    wagent: WatchedAgent, http: aiohttp.ClientSession, kc: KernletClient
) -> None:
    u = wagent.url
    extra = f"w-reset-{uuid.uuid4().hex[:6]}"
    await kc.create_kernel(IMAGE, kernel_id=extra, cpu=0.5)
    live = {k["id"] for k in (await get_json(http, f"{u}/kernels"))["kernels"]
            if k["state"] != "terminated"}
    assert extra in live and len(live) >= 2
    status, body = await post(http, f"{u}/agent/reset", AUTH)
    assert status == 200 and set(body["destroyed"]) == live and body["failed"] == {}
    kernels = (await get_json(http, f"{u}/kernels"))["kernels"]
    assert all(k["state"] == "terminated" for k in kernels)
    assert {k["reason"] for k in kernels if k["id"] in live} == {"agent-reset"}
    assert wagent.containers() == []
    assert (await get_json(http, f"{u}/status"))["kernels"]["live"] == 0


def _schemathesis(url: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("schemathesis")
    return subprocess.run(
        [str(cli), "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", "50",
         "--exclude-path", "/events", "--exclude-path", "/agent/shutdown",
         "--request-timeout", "30", "--seed", "20261130", "--no-color", *extra],
        capture_output=True, text=True, timeout=240, check=False, cwd=cwd,  # its cache dir
    )


def test_schemathesis_finds_no_server_error(wagent: WatchedAgent, tmp_path: Path) -> None:
    """Without the token (auth refusals) and with it (operations reach the agent)."""
    for extra in ((), ("-H", f"X-Kernlet-Token: {TOKEN}")):
        run = _schemathesis(wagent.url, tmp_path, *extra)
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert "passed" in run.stdout
    # aiohttp itself logs the malformed requests it refuses (400); kernlet logs no error
    errors = [line for line in wagent.log.read_text().splitlines() if " ERROR kernlet" in line]
    assert errors == []


# -- shutdown ----------------------------------------------------------------------------------


async def test_shutdown_stops_the_agent_and_keeps_kernels_running(
    halfstack: None, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    agent = WatchedAgent(tmp_path)
    agent.start()
    try:
        async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=90) as c:
            k = await c.create_kernel(IMAGE, cpu=0.5)
        status, body = await post(http, f"{agent.url}/agent/shutdown", AUTH)
        assert status == 202 and body["ok"] is True
        assert agent.proc is not None
        assert await asyncio.to_thread(agent.proc.wait, 30) == 0
        assert docker("inspect", "-f", "{{.State.Running}}", k["container_id"]).strip() == "true"
        with pytest.raises(aiohttp.ClientConnectionError):
            await get_json(http, f"{agent.url}/healthz")
        log = agent.log.read_text()
        assert "shutdown requested over the watcher" in log and "Traceback" not in log
    finally:
        agent.cleanup()
