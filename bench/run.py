"""``kernlet bench``: every figure against its floor, in one run, as one markdown table.

The run owns a temp dir, an agent process (id ``bench-<hex>``) and, for the floor of agent
start, a second one (``bench-<hex>-empty``); containers made directly for the creation floors
carry ``bench-<hex>-direct``. Whatever happens (an error, Ctrl-C, SIGTERM), the agents are
stopped and every container carrying one of these ids is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import eventlog
from bench.concurrent import fig_concurrent
from bench.density import dense_agent, fig_density
from bench.direct import DirectKernel, DirectKernels, Placement
from bench.fleet import fig_fleet
from bench.hostkernel import host_exec_times
from bench.pool import fig_pool, pool_agent
from bench.proc import AgentProc, Cleanup, RssSampler
from bench.report import (
    Row,
    fmt_bytes,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    format_table,
    median,
    percentile,
)
from kernlet.client import KernletClient
from kernlet.config import load_config

__all__ = ["FIGURES", "Params", "machine_info", "run"]

EXEC_CODE = "x = 1 + 1"


@dataclass(frozen=True)
class Params:
    """How much each figure does; ``quick()`` is the short pass."""

    create_reps: int = 5
    exec_runs: int = 500
    concurrent: int = 16
    concurrent_reps: int = 3
    output_bytes: int = 50 * 1024**2
    output_reps: int = 5
    recovery_kernels: int = 100
    recovery_reps: int = 3
    idle_kernels: int = 200
    idle_seconds: float = 60.0
    append_writers: int = 8
    appends_per_writer: int = 1000
    replay_events: int = 100_000
    density_kernels: int = 40
    density_seconds: float = 10.0

    @classmethod
    def quick(cls) -> Params:
        return cls(create_reps=2, exec_runs=100, concurrent=4, concurrent_reps=3,
                   output_bytes=5 * 1024**2, output_reps=3, recovery_kernels=10,
                   recovery_reps=1, idle_kernels=10, idle_seconds=15.0,
                   appends_per_writer=250, replay_events=20_000, density_kernels=10,
                   density_seconds=5.0)


#: figure names for ``--only``, in the order they run
FIGURES = ("eventlog", "create", "concurrent", "exec", "output", "fleet", "density", "pool")


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine_info() -> dict[str, str]:
    def cmd(*args: str) -> str:
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
            return out.stdout.strip()
        except OSError:
            return "?"

    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": cmd("nproc"),
        "memory": cmd("free", "-g").splitlines()[1] if cmd("free", "-g") else "?",
        "kernel": platform.release(),
        "docker": cmd("docker", "version", "--format", "{{.Server.Version}}"),
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


@dataclass
class Bench:
    image: str
    nats_url: str
    params: Params
    profile: Path | None = None
    cleanup: Cleanup = field(default_factory=Cleanup)
    rows: list[Row] = field(default_factory=list)

    def __post_init__(self) -> None:
        run_id = uuid.uuid4().hex[:8]
        self.root = Path(tempfile.mkdtemp(prefix=f"kernlet-bench-{run_id}-"))
        self.agent_id = f"bench-{run_id}"
        self.agent = AgentProc(self.root / "agent", self.agent_id, self.nats_url)
        self.empty = AgentProc(self.root / "empty", f"{self.agent_id}-empty", self.nats_url)
        self.cleanup.agents += [self.agent, self.empty]
        self.cleanup.agent_ids += [self.agent_id, f"{self.agent_id}-empty",
                                   f"{self.agent_id}-direct"]
        direct_cfg = load_config(self.agent.config, overrides={"agent": {
            "id": f"{self.agent_id}-direct", "var-dir": str(self.root / "direct")}})
        self.direct = DirectKernels(direct_cfg, self.image)
        self.client = KernletClient(self.nats_url, agent_id=self.agent_id, timeout=600)
        self.empty_client = KernletClient(self.nats_url, agent_id=self.empty.agent_id)

    # -- helpers --------------------------------------------------------------------------

    def config(self, share: int = 1) -> dict[str, Any]:
        """A kernel's config: alone, the defaults (one whole core, 512 MiB); one of ``share``
        kernels, an equal part of the cores (the agent does not overcommit) and 256 MiB."""
        if share <= 1:
            return {"image": self.image}
        cpu = int(len(os.sched_getaffinity(0)) * 1000 / share) / 1000
        return {"image": self.image, "cpu": cpu, "mem": 256 * 1024**2}

    async def create(self, n: int, share: int = 0) -> list[str]:
        """n kernels in one create_kernels call, each one of ``share`` (default n) on the
        node; their ids (raises if one failed)."""
        results = await self.client.create_kernels([self.config(share or n)] * n)
        bad = [r for r in results if not r.get("ok")]
        if bad:
            await self.destroy([r["id"] for r in results if r.get("ok")])
            raise RuntimeError(f"{len(bad)} of {n} kernels failed: {bad[0].get('error')}")
        return [str(r["id"]) for r in results]

    async def run_ok(self, kernel_id: str, code: str = "pass") -> None:
        res = await self.client.execute(kernel_id, code)
        if res.get("status") != "finished" or res.get("exitCode") != 0:
            raise RuntimeError(f"kernel {kernel_id}: {code!r} gave {res}")

    async def destroy(self, ids: list[str]) -> None:
        await asyncio.gather(*(self.client.destroy_kernel(k) for k in ids))

    async def placements(self, ids: list[str]) -> list[Placement]:
        """Slots and cores the agent gave these kernels (their kernel_creating events)."""
        out = []
        for kid in ids:
            events = await self.client.events(kid)
            creating = next(e["payload"] for e in events if e["type"] == "kernel_creating")
            out.append((dict(creating["slots"]), tuple(creating.get("cpuset") or ())))
        return out

    async def direct_ready(self, placement: Placement) -> DirectKernel:
        """The floor's kernel: created, started, ready, and it ran ``pass``."""
        kernel = await self.direct.create(placement)
        msg = await kernel.run("pass")
        if (msg.get("data") or {}).get("exitCode") != 0:
            raise RuntimeError(f"direct kernel: pass gave {msg}")
        return kernel

    @contextlib.asynccontextmanager
    async def profiled(self, name: str) -> Any:
        """py-spy records the agent meanwhile, when --profile is given."""
        if self.profile is None:
            yield
            return
        from bench.profile import record

        async with record(self.agent.pid, self.profile / f"{name}.txt"):
            yield

    # -- figures --------------------------------------------------------------------------

    async def fig_eventlog(self) -> None:
        p = self.params
        say(f"event log: {p.append_writers} writers x {p.appends_per_writer} appends")
        a = await eventlog.bench_appends(self.root / "eventlog", p.append_writers,
                                         p.appends_per_writer)
        ratio = a.kernlet_per_s / a.baseline_per_s
        self.rows.append(Row(
            f"event log: durable appends, {p.append_writers} concurrent kernels "
            f"({a.appends / a.commits:.1f} per commit)",
            fmt_rate(a.kernlet_per_s, "appends"), fmt_rate(a.baseline_per_s, "inserts"),
            fmt_ratio(ratio), "ratio >= 3.0", ratio >= 3.0))
        self.rows.append(Row(
            f"event log: the same rows in kernlet's transactions ({p.append_writers} a commit), "
            "plain sqlite3, no Python between (the bound on the ratio above)",
            fmt_rate(a.shape_per_s, "rows"), fmt_rate(a.baseline_per_s, "inserts"),
            fmt_ratio(a.shape_per_s / a.baseline_per_s)))
        say(f"event log: replay of {p.replay_events:,} events")
        r = await eventlog.bench_replay(self.root / "eventlog", p.replay_events)
        self.rows.append(Row(
            f"event log: replay {r.events:,} events, open + live state ({r.live} of "
            f"{r.kernels} kernels live)",
            fmt_seconds(r.open_live_s), fmt_seconds(r.base_live_s),
            fmt_ratio(r.open_live_s / r.base_live_s), "<= 100 ms", r.open_live_s <= 0.1))
        self.rows.append(Row(
            f"event log: replay {r.events:,} events, open + full fold of all streams",
            fmt_seconds(r.full_fold_s), fmt_seconds(r.base_full_s),
            fmt_ratio(r.full_fold_s / r.base_full_s), "<= 300 ms", r.full_fold_s <= 0.3))

    async def fig_create(self) -> None:
        p = self.params
        say(f"create-to-ready: {p.create_reps} kernels each way (+1 warm-up each)")
        ours, floor = [], []
        for i in range(p.create_reps + 1):
            t0 = time.perf_counter()
            (kid,) = await self.create(1)
            await self.run_ok(kid)
            t_ours = time.perf_counter() - t0
            (placement,) = await self.placements([kid])
            await self.destroy([kid])
            t0 = time.perf_counter()
            kernel = await self.direct_ready(placement)
            t_floor = time.perf_counter() - t0
            await self.direct.remove(kernel)
            if i:
                ours.append(t_ours)
                floor.append(t_floor)
        k, b = median(ours), median(floor)
        self.rows.append(Row(
            f"create-to-ready, one kernel (median of {p.create_reps})",
            fmt_seconds(k), fmt_seconds(b), fmt_ratio(k / b), "ratio <= 1.05", k / b <= 1.05))

    async def fig_exec(self, kid: str) -> None:
        p = self.params
        say(f"exec round trip: {p.exec_runs} runs of {EXEC_CODE!r} each way")
        for _ in range(20):
            await self.client.execute(kid, EXEC_CODE)
        ours = []
        async with self.profiled("exec"):
            for _ in range(p.exec_runs):
                t0 = time.perf_counter()
                await self.client.execute(kid, EXEC_CODE)
                ours.append(time.perf_counter() - t0)
        floor = await asyncio.to_thread(host_exec_times, EXEC_CODE, p.exec_runs)
        # where kernlet's time goes: the runtime in a container, reached on its socket
        # directly (no NATS, no agent), against the same floor
        kernel = await self.direct_ready((await self.placements([kid]))[0])
        try:
            for _ in range(20):
                await kernel.run(EXEC_CODE)
            alone = []
            for _ in range(p.exec_runs):
                t0 = time.perf_counter()
                await kernel.run(EXEC_CODE)
                alone.append(time.perf_counter() - t0)
        finally:
            await self.direct.remove(kernel)
        k50, b50, r50 = percentile(ours, 50), percentile(floor, 50), percentile(alone, 50)
        k99, b99, r99 = percentile(ours, 99), percentile(floor, 99), percentile(alone, 99)
        self.rows.append(Row(f"exec round trip `{EXEC_CODE}`, p50 of {p.exec_runs}",
                             fmt_seconds(k50), fmt_seconds(b50), fmt_ratio(k50 / b50),
                             "p50 ratio <= 1.0", k50 / b50 <= 1.0))
        self.rows.append(Row(f"exec round trip `{EXEC_CODE}`, p99 of {p.exec_runs}",
                             fmt_seconds(k99), fmt_seconds(b99), fmt_ratio(k99 / b99),
                             "p99 ratio <= 1.2", k99 / b99 <= 1.2))
        self.rows.append(Row("(part of it: the runtime in its container alone, on its socket; "
                             "p50 / p99)", f"{fmt_seconds(r50)} / {fmt_seconds(r99)}",
                             f"{fmt_seconds(b50)} / {fmt_seconds(b99)}",
                             f"{fmt_ratio(r50 / b50)} / {fmt_ratio(r99 / b99)}"))

    async def fig_output(self, kid: str) -> None:
        p = self.params
        lines = p.output_bytes // 1024
        code = f"_l = 'x' * 1023\nfor _ in range({lines}):\n    print(_l)\n"
        say(f"output throughput: {fmt_bytes(p.output_bytes)} printed, {p.output_reps}x each way")
        container = (await self.client.list_kernels())
        cid = next(k["container_id"] for k in container if k["id"] == kid)
        ours, floor, growth = [], [], []
        for _ in range(p.output_reps):
            got = 0
            async with self.profiled("output"):
                with RssSampler(self.agent.pid) as rss:
                    t0 = time.perf_counter()
                    async for kind, data in self.client.stream(kid, code):
                        if kind == "stdout":
                            got += len(data)
                        elif kind == "result" and data.get("exitCode") != 0:
                            raise RuntimeError(f"output run failed: {data}")
                    ours.append(time.perf_counter() - t0)
            growth.append(rss.peak - rss.start_rss)
            if got != lines * 1024:
                raise RuntimeError(f"streamed {got} bytes of {lines * 1024}")
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                "docker", "exec", cid, "python3", "-c", code,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate()
            floor.append(time.perf_counter() - t0)
            if proc.returncode:
                raise RuntimeError(f"docker exec failed: {err.decode()[-500:]}")
        size = lines * 1024
        k, b = size / median(ours), size / median(floor)
        self.rows.append(Row(
            f"output throughput, {fmt_bytes(size)} printed (median of {p.output_reps})",
            fmt_rate(k / 1024**2, "MiB"), fmt_rate(b / 1024**2, "MiB"), fmt_ratio(k / b),
            ">= 0.9", k / b >= 0.9))
        g = max(growth)
        self.rows.append(Row("agent RSS growth while streaming it (max over runs)",
                             fmt_bytes(g), "-", "-", "< 20 MiB", g < 20 * 1024**2))

    # -- the run --------------------------------------------------------------------------

    async def run(self, only: tuple[str, ...]) -> list[Row]:
        selected = [f for f in FIGURES if not only or f in only]
        await self.client.connect()
        if "eventlog" in selected:
            await self.fig_eventlog()
        # eventlog needs no agent; density and pool start their own
        agent_figures = [f for f in selected if f not in ("eventlog", "density", "pool")]
        if agent_figures:
            await self.agent_run(selected)
        if "density" in selected:
            await fig_density(self, dense_agent(self))
        if "pool" in selected:
            await fig_pool(self, pool_agent(self))
        return self.rows

    async def agent_run(self, selected: list[str]) -> None:
        """The figures of the bench's main agent."""
        say(f"starting agent {self.agent_id} (var dir {self.agent.var_dir})")
        await self.agent.start(self.client)
        if "create" in selected:
            await self.fig_create()
        if "concurrent" in selected:
            await fig_concurrent(self)
        if "exec" in selected or "output" in selected:
            (kid,) = await self.create(1)
            if "exec" in selected:
                await self.fig_exec(kid)
            if "output" in selected:
                await self.fig_output(kid)
            await self.destroy([kid])
        if "fleet" in selected:
            if "create" in selected or "concurrent" in selected or "exec" in selected:
                # a fresh agent process for the footprint (earlier figures leave heap behind)
                await self.agent.stop()
                await self.agent.start(self.client)
            await fig_fleet(self)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()
        with contextlib.suppress(Exception):
            await self.direct.close()
        for line in await asyncio.to_thread(self.cleanup.run_sync):
            say(f"cleanup: {line}")
        shutil.rmtree(self.root, ignore_errors=True)


async def _main(bench: Bench, only: tuple[str, ...]) -> list[Row]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    # explicit, also where SIGINT was inherited as ignored (a background job of a script)
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await bench.run(only)
    finally:
        await asyncio.shield(bench.close())


def run(image: str, nats_url: str, quick: bool, only: tuple[str, ...] = (),
        profile: Path | None = None) -> str:
    """Run the bench; returns the markdown table (also printed by the CLI)."""
    bench = Bench(image, nats_url, Params.quick() if quick else Params(), profile)
    info = machine_info()
    say(f"agent id {bench.agent_id}; temp dir {bench.root}; load {info['load']}")
    t0 = time.monotonic()
    try:
        rows = asyncio.run(_main(bench, only))
    finally:
        # the last resort when the loop could not finish its own cleanup (idempotent)
        bench.cleanup.run_sync()
        shutil.rmtree(bench.root, ignore_errors=True)
    say(f"done in {time.monotonic() - t0:.0f} s; load {os.getloadavg()[0]:.2f}")
    return format_table(rows)
