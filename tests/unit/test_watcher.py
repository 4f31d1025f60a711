"""The watcher without Docker or NATS: rules, sampling, metrics, live view, the app on fakes."""

from __future__ import annotations

import asyncio
import threading
import time
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka
import pytest
from aiohttp.test_utils import TestClient, TestServer

import kernlet.watcher as watcher_pkg
from fixtures.bodies import body
from kernlet.actors.loop import LoopThread
from kernlet.actors.messages import Command
from kernlet.config import AgentConfig
from kernlet.errors import DockerError, KernelNotFound
from kernlet.events import (
    AGENT_STREAM,
    AgentStarted,
    Envelope,
    ExecutionFinished,
    KernelStarted,
    State,
    new_envelope,
)
from kernlet.protocol import DestroyKernel, ListKernels, Ping
from kernlet.store import MemoryEventLog
from kernlet.watcher import (
    Hub,
    KernelView,
    ShutdownAgent,
    Usage,
    UsageTracker,
    Watcher,
    WatcherActor,
    WatcherCore,
    WatcherMetrics,
    build_app,
    check_token,
    openapi_spec,
    reconcile_check,
)
from kernlet.watcher._actor import Sample
from kernlet.watcher._live import sse
from kernlet.watcher._status import Identity, build_status

RUNNING = ("kernel_preparing", "kernel_creating", "container_created", "kernel_started")


def kernel_events(kernel_id: str, types: tuple[str, ...], start: int = 1) -> list[Envelope]:
    out = []
    for i, t in enumerate(types):
        b: Any = body(t, kernel_id)
        if t == "kernel_started":
            b = KernelStarted(container_id=f"c-{kernel_id}", info={"create_seconds": 1.5})
        out.append(new_envelope(kernel_id, start + i, b, now=1000.0 + start + i))
    return out


# -- public surface -------------------------------------------------------------------------------


def test_all_is_sorted_and_complete() -> None:
    exported = watcher_pkg.__all__
    assert list(exported) == sorted(exported, key=lambda n: (not n.isupper(), n))
    public = {n for n, v in vars(watcher_pkg).items()
              if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public == set(exported)


# -- rules ----------------------------------------------------------------------------------------


def test_token_rules() -> None:
    status, message = check_token(None, "anything") or (0, "")
    assert status == 403 and "token" in message and "[watcher]" in message
    assert (check_token("", None) or (0,))[0] == 403
    assert (check_token("s3cret", None) or (0,))[0] == 401
    assert (check_token("s3cret", "") or (0,))[0] == 401
    assert (check_token("s3cret", "wrong") or (0,))[0] == 403
    assert (check_token("s3cret", "s3cre") or (0,))[0] == 403
    assert (check_token("s3cret", "s3cret\u00e9") or (0,))[0] == 403
    assert check_token("s3cret", "s3cret") is None


def test_reconcile_check_fails_only_when_a_reconcile_is_too_old() -> None:
    assert reconcile_check(None, 1000.0).ok
    assert reconcile_check(None, 1000.0).detail == "not yet run"
    assert reconcile_check(990.0, 1000.0).ok
    stale = reconcile_check(900.0, 1000.0)
    assert not stale.ok and "100 s" in stale.detail


def test_status_arithmetic() -> None:
    live = [
        {"id": "a", "state": "running", "slots": {"cpu": "1.5", "mem": str(512 * 2**20)}},
        {"id": "b", "state": "creating", "slots": {"cpu": "1", "mem": "bad"}},
        {"id": "c", "state": "preparing", "slots": {}},
    ]
    s = build_status(
        identity=Identity("ag", "0", "r", "g", "h"), started_at=100.0, now=160.0,
        capacity={"cpu": 4.0, "mem": float(2**30)}, live=live, kernels_total=7,
        log_figures=(10, 4096, 2), nats=(True, 8, ""), heartbeat_at=None, reconcile_at=150.0,
        loop_lag=0.001, usage=Usage(),
    )
    d = s.to_dict()
    assert d["agent"]["uptime_seconds"] == 60.0
    assert d["resources"]["used"] == {"cpu": 2.5, "mem": float(512 * 2**20)}
    assert d["resources"]["free"] == {"cpu": 1.5, "mem": float(512 * 2**20)}
    assert d["kernels"] == {
        "live": 3, "total": 7,
        "by_state": {"preparing": 1, "pulling": 0, "creating": 1, "running": 1,
                     "restarting": 0, "terminating": 0, "terminated": 4},
    }
    assert d["reconcile_age_seconds"] == 10.0 and d["heartbeat_age_seconds"] is None


# -- usage ------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_usage_from_cgroup_v1_and_v2_with_rates(tmp_path: Path) -> None:
    cg, proc = tmp_path / "cg", tmp_path / "proc"
    _write(cg / "memory/docker/c1/memory.usage_in_bytes", "1000000\n")
    _write(cg / "memory/docker/c1/memory.stat", "cache 5\ntotal_inactive_file 200000\n")
    _write(cg / "cpuacct/docker/c1/cpuacct.usage", "2000000000\n")
    _write(cg / "system.slice/docker-c2.scope/memory.current", "300\n")
    _write(cg / "system.slice/docker-c2.scope/memory.stat", "inactive_file 100\n")
    _write(cg / "system.slice/docker-c2.scope/cpu.stat", "usage_usec 500000\nuser_usec 1\n")
    _write(proc / "meminfo", "MemTotal: 1000 kB\nMemFree: 1 kB\nMemAvailable: 250 kB\n")
    _write(proc / "stat", "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n")
    now = [10.0]
    tracker = UsageTracker(cg, proc, clock=lambda: now[0], wall=lambda: 5000.0)

    first = tracker.sample({"k1": "c1", "k2": "c2", "k3": "missing"})
    assert set(first.kernels) == {"k1", "k2"}
    assert first.kernels["k1"].memory_bytes == 800000
    assert first.kernels["k1"].cpu_seconds == 2.0 and first.kernels["k1"].cpu_ratio == 0.0
    assert first.kernels["k2"].memory_bytes == 200 and first.kernels["k2"].cpu_seconds == 0.5
    assert first.host is not None and first.host.mem_total == 1000 * 1024
    assert first.host.mem_available == 250 * 1024 and first.at == 5000.0

    now[0] = 12.0
    _write(cg / "cpuacct/docker/c1/cpuacct.usage", "3000000000\n")  # one more CPU second
    _write(proc / "stat", "cpu  200 0 100 800 100 0 0 0 0 0\n")  # 100 busy of 200
    second = tracker.sample({"k1": "c1"})
    assert second.kernels["k1"].cpu_ratio == pytest.approx(0.5)
    assert second.host is not None and second.host.cpu_ratio == pytest.approx(0.5)
    assert set(second.kernels) == {"k1"}


# -- metrics ----------------------------------------------------------------------------------------


def _sample(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in metrics")


def _status(**over: Any) -> Any:
    args: dict[str, Any] = {
        "identity": Identity("ag", "0", "r", "g", "h"), "started_at": 0.0, "now": 10.0,
        "capacity": {"cpu": 2.0, "mem": 100.0}, "live": [{"state": "running"}],
        "kernels_total": 3, "log_figures": (5, 6, 7), "nats": (False, 1, "down"),
        "heartbeat_at": 4.0, "reconcile_at": None, "loop_lag": 0.0, "usage": Usage(),
    }
    args.update(over)
    return build_status(**args)


def test_metrics_count_transitions_latency_executions_and_gauges() -> None:
    from kernlet.watcher._usage import KernelUsage

    m, other = WatcherMetrics(), WatcherMetrics()  # registries of their own: no clash
    view_states: dict[str, Any] = {}
    from kernlet.events import apply

    for env in kernel_events("k1", (*RUNNING, "execution_started")):
        before = view_states.get("k1")
        view_states["k1"] = apply(before, env)
        m.observe(env, before, view_states["k1"])
    m.observe(new_envelope("k1", 6, ExecutionFinished(run_id="r", status="finished")),
              view_states["k1"], view_states["k1"])
    usage = Usage(kernels={"k1": KernelUsage("c-k1", 3.5, 0.25, 1234)})
    text = m.render(_status(usage=usage, capacity={"cpu": 2.0, "mem": 100.0,
                                                   "cuda.device": 1.0}))[0].decode()
    other.render(_status())

    t = "kernlet_lifecycle_transitions_total"
    assert _sample(text, f'{t}{{from_state="none",to_state="preparing"}}') == 1
    assert _sample(text, f'{t}{{from_state="creating",to_state="running"}}') == 1
    assert 'to_state="running",from_state="running"' not in text  # executions change no state
    assert _sample(text, "kernlet_kernel_create_seconds_count") == 1
    assert _sample(text, "kernlet_kernel_create_seconds_sum") == 1.5
    assert _sample(text, 'kernlet_executions_total{status="finished"}') == 1
    assert _sample(text, 'kernlet_events_total{type="kernel_started"}') == 1
    assert _sample(text, 'kernlet_kernels{state="running"}') == 1
    assert _sample(text, 'kernlet_kernels{state="terminated"}') == 2
    assert _sample(text, "kernlet_event_log_undelivered") == 7
    assert _sample(text, "kernlet_nats_connected") == 0
    assert _sample(text, "kernlet_heartbeat_age_seconds") == 6
    assert "kernlet_reconcile_age_seconds" not in text  # not run yet: no series
    assert _sample(text, 'kernlet_kernel_memory_bytes{kernel_id="k1"}') == 1234
    assert _sample(text, 'kernlet_kernel_cpu_seconds_total{kernel_id="k1"}') == 3.5
    assert _sample(text, 'kernlet_kernel_cpu_usage_cores{kernel_id="k1"}') == 0.25
    assert "ratio{kernel_id" not in text  # cores are not a ratio
    # one unit per family: cores, bytes and devices never share a gauge
    assert _sample(text, 'kernlet_node_capacity_cores{slot="cpu"}') == 2
    assert _sample(text, 'kernlet_node_capacity_bytes{slot="mem"}') == 100
    assert _sample(text, 'kernlet_node_capacity_devices{slot="cuda.device"}') == 1
    assert "kernlet_node_capacity{" not in text
    # the process's own figures
    assert _sample(text, "process_resident_memory_bytes") > 0
    assert "python_info{" in text
    # a kernel that is gone disappears from the per-kernel series
    assert "kernel_id=" not in m.render(_status())[0].decode()


def test_metrics_count_requests_by_command_and_error_and_speak_openmetrics() -> None:
    m = WatcherMetrics()
    m.observe_request("ping", None, 0.002)
    m.observe_request("ping", None, 0.004)
    m.observe_request("create_kernel", "ImageNotFound", 0.03)
    text, content_type = m.render(_status())
    assert content_type.startswith("text/plain; version=0.0.4")
    t = text.decode()
    assert _sample(t, 'kernlet_requests_total{command="ping",error="none"}') == 2
    assert _sample(t, 'kernlet_requests_total{command="create_kernel",error="ImageNotFound"}') == 1
    assert _sample(t, 'kernlet_request_duration_seconds_count{command="ping"}') == 2
    assert _sample(t, 'kernlet_request_duration_seconds_bucket{command="ping",le="0.0025"}') == 1
    assert _sample(t, 'kernlet_request_duration_seconds_sum{command="ping"}') == 0.006
    om, om_type = m.render(_status(), "application/openmetrics-text; version=1.0.0")
    assert om_type.startswith("application/openmetrics-text")
    assert om.decode().endswith("# EOF\n")
    assert 'kernlet_requests_total{command="ping",error="none"} 2.0' in om.decode()


# -- live view and hub --------------------------------------------------------------------------


async def test_view_folds_events_and_heals_after_a_gap() -> None:
    store = MemoryEventLog()
    await store.open()
    try:
        evs = kernel_events("k1", RUNNING)
        await store.append(evs)
        view = KernelView(store)
        await view.seed()
        assert view.containers() == {"k1": "c-k1"}
        # a gap: seq 6 arrives, 5 was never seen
        more = kernel_events("k1", ("execution_started", "execution_finished"), start=5)
        await store.append(more)
        assert view.apply(more[1]) is None
        healed = await view.reload("k1")
        assert healed is not None and healed.seq == 6
        # terminated kernels leave the view
        end = kernel_events("k1", ("kernel_terminated",), start=7)
        await store.append(end)
        change = view.apply(end[0])
        assert change is not None and change[1].state is State.TERMINATED
        assert view.get("k1") is None and view.containers() == {}
    finally:
        await store.close()


async def test_hub_fans_out_drops_slow_clients_and_closes() -> None:
    hub = Hub(max_queue=2)
    fast, slow = hub.subscribe(), hub.subscribe()
    hub.publish(b"1")
    assert fast.get_nowait() == b"1"
    hub.publish(b"2")
    hub.publish(b"3")  # slow now holds 1, 2: full, dropped and told to end
    assert hub.subscribers == 1
    assert slow.get_nowait() is None
    hub.close()
    assert hub.subscribers == 0
    assert [fast.get_nowait() for _ in range(fast.qsize())][-1] is None


def test_sse_framing_is_one_data_line() -> None:
    frame = sse("kernel", {"text": "a\nb"})
    assert frame.startswith(b"event: kernel\ndata: {") and frame.endswith(b"}\n\n")
    assert frame.count(b"\n") == 3


# -- the app on fakes ------------------------------------------------------------------------------


class FakeAgent(pykka.ThreadingActor):
    """Answers the watcher's commands like the agent actor does (Reply from another thread)."""

    def __init__(self, kernels: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.kernels = kernels
        self.destroyed: list[tuple[str, str]] = []

    def on_receive(self, message: Any) -> Any:
        assert isinstance(message, Command)
        req, reply = message.request, message.reply
        if isinstance(req, Ping):
            reply.ok({"msg": req.msg})
        elif isinstance(req, ListKernels):
            reply.ok({"kernels": [dict(k) for k in self.kernels.values()]})
        elif isinstance(req, DestroyKernel):
            if req.kernel_id not in self.kernels:
                reply.error(KernelNotFound(f"no live kernel {req.kernel_id!r}"))
            else:
                self.destroyed.append((req.kernel_id, req.reason))
                reply.ok({"id": req.kernel_id, "reason": req.reason, "exit_code": 0})
        return None


class FakeDocker:
    def __init__(self) -> None:
        self.fail = False

    async def ping(self) -> None:
        if self.fail:
            raise DockerError("docker: connection refused")


@dataclass
class FakeBus:
    connected: bool = True


@dataclass
class FakeOutbox:
    published: int = 0
    last_error: str = ""


@dataclass
class FakeCtx:
    listeners: list[Any] = field(default_factory=list)


@dataclass
class FakeHandle:
    cfg: AgentConfig
    loop: LoopThread
    store: MemoryEventLog
    agent: Any
    docker: FakeDocker = field(default_factory=FakeDocker)
    bus: FakeBus = field(default_factory=FakeBus)
    outbox: FakeOutbox = field(default_factory=FakeOutbox)
    ctx: FakeCtx = field(default_factory=FakeCtx)
    started_at: float = field(default_factory=time.time)
    last_reconcile: float | None = None
    stopped: int = 0

    def stop(self) -> None:
        self.stopped += 1


def _summary(kid: str, state: str) -> dict[str, Any]:
    return {"id": kid, "session_id": kid, "state": state, "image": "img", "container_id": "",
            "slots": {"cpu": "1", "mem": "1048576"}, "executions": 0, "created_at": 1.0,
            "updated_at": 2.0, "reason": "", "exit_code": None}


@dataclass
class AppRig:
    client: TestClient[Any, Any]
    handle: FakeHandle
    core: WatcherCore
    fake: Any
    shutdowns: list[str]


async def _rig(token: str | None, allowed_origins: tuple[str, ...] = ()) -> AsyncIterator[AppRig]:
    cfg = AgentConfig.model_validate({"agent": {"id": "unit"}, "watcher": {
        "token": token, "allowed-origins": list(allowed_origins)}})
    store = MemoryEventLog()
    await store.open()
    await store.append(kernel_events("k1", RUNNING))
    ref = FakeAgent.start({"k1": _summary("k1", "running")})
    handle = FakeHandle(cfg=cfg, loop=LoopThread(), store=store, agent=ref)
    core = WatcherCore(handle, capacity={"cpu": 2.0, "mem": 2.0**30}, hostname="unit-host",
                       request_sample=lambda containers: None)
    await core.start(background=False)
    shutdowns: list[str] = []
    app = build_app(core, cfg.watcher.token, shutdowns.append, cfg.watcher.allowed_origins)
    try:
        async with TestClient(TestServer(app)) as client:
            yield AppRig(client, handle, core, ref.proxy(), shutdowns)
    finally:
        await core.close()
        ref.stop()
        await store.close()


@pytest.fixture
async def rig() -> AsyncIterator[AppRig]:
    async for r in _rig("s3cret"):
        yield r


@pytest.fixture
async def rig_no_token() -> AsyncIterator[AppRig]:
    async for r in _rig(None):
        yield r


OPERATIONS = ("/kernels/k1/destroy", "/agent/reset", "/agent/shutdown")


async def test_operations_are_refused_when_no_token_is_configured(rig_no_token: AppRig) -> None:
    c = rig_no_token.client
    for path in OPERATIONS:
        for headers in ({}, {"X-Kernlet-Token": "anything"}, {"X-Kernlet-Token": ""}):
            r = await c.post(path, headers=headers)
            assert r.status == 403, (path, headers)
            err = (await r.json())["error"]
            assert "no token is configured" in err["message"]
            assert "[watcher]" in err["message"]
    assert rig_no_token.fake.destroyed.get() == []
    assert rig_no_token.shutdowns == []


async def test_token_rules_over_http(rig: AppRig) -> None:
    c = rig.client
    for path in OPERATIONS:
        assert (await c.post(path)).status == 401
        assert (await c.post(path, headers={"X-Kernlet-Token": "nope"})).status == 403
    assert rig.fake.destroyed.get() == [] and rig.shutdowns == []
    ok = {"X-Kernlet-Token": "s3cret"}
    r = await c.post("/kernels/k1/destroy", headers=ok, json={"reason": "maintenance"})
    assert r.status == 200 and (await r.json())["reason"] == "maintenance"
    r = await c.post("/kernels/k1/destroy", headers=ok)
    assert r.status == 200 and (await r.json())["reason"] == "operator-requested"
    assert rig.fake.destroyed.get() == [("k1", "maintenance"), ("k1", "operator-requested")]
    assert (await c.post("/kernels/zz/destroy", headers=ok)).status == 404
    assert (await c.post("/kernels/_agent/destroy", headers=ok)).status == 404
    for bad in (b"[1]", b"{not json", b'{"reason": 5}', b'{"why": "x"}', b'{"reason": ""}'):
        r = await c.post("/kernels/k1/destroy", headers=ok, data=bad)
        assert r.status == 400, bad
        assert (await r.json())["error"]["type"] == "InvalidRequest"
    r = await c.post("/agent/reset", headers=ok)
    assert r.status == 200
    assert await r.json() == {"destroyed": ["k1"], "failed": {}}
    assert rig.fake.destroyed.get()[-1] == ("k1", "agent-reset")
    r = await c.post("/agent/shutdown", headers=ok)
    assert r.status == 202 and (await r.json())["ok"] is True
    assert len(rig.shutdowns) == 1


async def test_read_endpoints_on_fakes(rig: AppRig) -> None:
    c = rig.client
    r = await c.get("/healthz")
    assert r.status == 200
    h = await r.json()
    assert h["ok"] and set(h["checks"]) == {"agent", "docker", "event_log", "loop", "nats",
                                            "reconcile"}
    assert h["checks"]["reconcile"]["detail"] == "not yet run"
    rig.handle.docker.fail = True
    rig.handle.bus.connected = False
    rig.handle.last_reconcile = time.time() - 120
    r = await c.get("/healthz")
    assert r.status == 503
    h = await r.json()
    failing = {n for n, chk in h["checks"].items() if not chk["ok"]}
    assert failing == {"docker", "nats", "reconcile"}
    assert "connection refused" in h["checks"]["docker"]["detail"]

    s = await (await c.get("/status")).json()
    assert s["agent"]["id"] == "unit" and s["agent"]["hostname"] == "unit-host"
    assert s["kernels"]["by_state"]["running"] == 1
    assert s["resources"]["used"]["cpu"] == 1.0

    r = await c.get("/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert 'kernlet_kernels{state="running"} 1.0' in await r.text()

    ks = (await (await c.get("/kernels")).json())["kernels"]
    assert [k["id"] for k in ks] == ["k1"]
    d = await (await c.get("/kernels/k1")).json()
    assert [e["type"] for e in d["events"]] == list(RUNNING)
    assert [e["state"] for e in d["events"]] == ["preparing", "creating", "creating", "running"]
    assert d["live"] is True
    for missing in ("/kernels/nope", "/kernels/_agent", "/kernels/a%20b"):
        r = await c.get(missing)
        assert r.status == 404 and (await r.json())["error"]["type"] == "KernelNotFound"

    r = await c.get("/")
    assert r.status == 200 and "kernlet" in await r.text()
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    for asset in ("/static/app.js", "/static/app.css"):
        assert (await c.get(asset)).status == 200


async def test_event_stream_sends_a_snapshot_then_live_events(rig: AppRig) -> None:
    async with rig.client.get("/events") as r:
        assert r.headers["Content-Type"] == "text/event-stream"

        async def next_event() -> tuple[str, Any]:
            import json

            name = ""
            while True:
                line = (await asyncio.wait_for(r.content.readline(), 5)).decode().strip()
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name:
                    return name, json.loads(line[6:])

        name, snap = await next_event()
        assert name == "snapshot" and [k["id"] for k in snap["kernels"]] == ["k1"]
        env = kernel_events("k1", ("execution_started",), start=5)[0]
        await rig.handle.store.append([env])
        for listener in rig.handle.ctx.listeners:
            listener(env)
        agent_env = new_envelope(AGENT_STREAM, 1, AgentStarted(reason="x"))
        rig.core.on_event(agent_env)
        name, data = await next_event()
        assert name == "kernel"
        assert data["event"]["type"] == "execution_started" and data["kernel"]["executions"] == 1
        assert data["event"]["state"] == "running"
        name, data = await next_event()
        assert name == "agent" and data["type"] == "agent_started"
        rig.core.hub.close()  # the server's stop ends streams like this


def test_openapi_names_exactly_the_served_routes() -> None:
    import schemathesis

    spec = openapi_spec("http://127.0.0.1:1")
    schema = schemathesis.openapi.from_dict(spec)
    assert schema is not None
    core: Any = object.__new__(WatcherCore)  # build_app only keeps it
    served: set[tuple[str, str]] = set()
    for route in build_app(core, None, lambda who: None).router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or ""
        if route.method in ("HEAD",) or path in ("/",) or "prefix" in info:
            continue
        served.add((route.method.lower(), path))
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert served == documented


# -- the actor and the whole watcher ---------------------------------------------------------


def test_actor_samples_off_the_loop_and_shuts_down_once(tmp_path: Path) -> None:
    loop = LoopThread().start()
    got: list[tuple[Usage, bool]] = []
    stops: list[str] = []
    done = threading.Event()

    def publish(u: Usage) -> None:
        got.append((u, loop.on_loop))
        done.set()

    def stop_agent() -> None:
        stops.append(threading.current_thread().name)

    _write(tmp_path / "cg/memory/docker/c/memory.usage_in_bytes", "42\n")
    tracker = UsageTracker(tmp_path / "cg", tmp_path / "proc")
    ref = WatcherActor.start(loop, tracker, publish, stop_agent)
    try:
        ref.tell(Sample({"k": "c"}))
        assert done.wait(5)
        usage, on_loop = got[0]
        assert on_loop and usage.kernels["k"].memory_bytes == 42
        ref.tell(ShutdownAgent("test"))
        ref.tell(ShutdownAgent("test"))
        ref.ask(Sample({}))  # both shutdowns were handled before this
        deadline = time.monotonic() + 5
        while not stops and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert stops == ["kernlet-watcher-shutdown"]
    finally:
        ref.stop()
        loop.stop()


def test_watcher_starts_on_a_free_loopback_port_and_stops_cleanly() -> None:
    import urllib.request

    loop = LoopThread().start()
    store = MemoryEventLog()
    loop.run(store.open())
    ref = FakeAgent.start({})
    cfg = AgentConfig.model_validate({"agent": {"id": "unit"}, "watcher": {"port": 0}})
    handle = FakeHandle(cfg=cfg, loop=loop, store=store, agent=ref)
    w = Watcher(handle, capacity={"cpu": 1.0, "mem": 1.0})
    try:
        url = w.start()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
        assert handle.ctx.listeners  # listens to durable events
        with urllib.request.urlopen(url + "healthz", timeout=5) as resp:
            assert resp.status == 200
        t0 = time.monotonic()
        w.stop()
        assert time.monotonic() - t0 < 5
        assert handle.ctx.listeners == []
        w.stop()  # twice is fine
    finally:
        ref.stop()
        loop.run(store.close())
        loop.stop()


def test_watcher_that_cannot_bind_raises_and_leaves_nothing_behind() -> None:
    import socket

    loop = LoopThread().start()
    store = MemoryEventLog()
    loop.run(store.open())
    ref = FakeAgent.start({})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = AgentConfig.model_validate({"agent": {"id": "unit"}, "watcher": {"port": port}})
        handle = FakeHandle(cfg=cfg, loop=loop, store=store, agent=ref)
        w = Watcher(handle, capacity={"cpu": 1.0, "mem": 1.0})
        try:
            with pytest.raises(OSError):
                w.start()
            assert handle.ctx.listeners == [] and w.actor is None
        finally:
            ref.stop()
            loop.run(store.close())
            loop.stop()
