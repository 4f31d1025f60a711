"""The ``density`` figure: how many kernels of the smallest size one node holds (issue 19).

A third agent of its own (id ``bench-<hex>-dense``: port range 31600-32000, two host ports a
kernel; create timeout 300 s) is started fresh, then asked for N kernels of
``container.min-mem`` and 0.02 cpu in calls of 20, until N or the first call with a failure.
With them idle: the memory each kernel's container uses (its cgroup, as ``docker stats``),
the agent's RSS per kernel (against the same agent before the kernels), and how long
``reset_agent`` takes to answer for all of them. The agent is stopped afterwards.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

from bench.fleet import RSS_PER_KERNEL, footprint
from bench.proc import AgentProc, container_memory
from bench.report import Row, fmt_bytes, fmt_ratio, fmt_seconds, fmt_started, shorten
from kernlet.client import KernletClient
from kernlet.config import ContainerSection

if TYPE_CHECKING:
    from bench.run import Bench

__all__ = ["BATCH", "CPU", "PORT_RANGE", "dense_agent", "fig_density"]

#: kernels per create_kernels call
BATCH = 20
#: each kernel's cpu: 40 of them ask for 0.8 of the 2 cores
CPU = 0.02
#: two service ports a kernel: room for 200, clear of the other agents' ranges
PORT_RANGE = (31600, 32000)


def dense_agent(bench: Bench) -> AgentProc:
    """The figure's agent (not started); registered with the bench's cleanup."""
    agent = AgentProc(bench.root / "dense", f"{bench.agent_id}-dense", bench.nats_url,
                      create_timeout=300, port_range=PORT_RANGE)
    bench.cleanup.agents.append(agent)
    bench.cleanup.agent_ids.append(agent.agent_id)
    return agent


async def fig_density(bench: Bench, agent: AgentProc) -> None:
    n, seconds = bench.params.density_kernels, bench.params.density_seconds
    mem = ContainerSection().min_mem
    from bench.run import say  # run imports this module

    async with KernletClient(bench.nats_url, agent_id=agent.agent_id, timeout=600) as client:
        say(f"density: starting agent {agent.agent_id}; its RSS over {seconds:.0f} s")
        await agent.start(client)
        rss0, _ = await footprint(agent, seconds)
        say(f"density: {n} kernels of {fmt_bytes(mem)}, {CPU} cpu, {BATCH} per call")
        ids: list[str] = []
        error = ""
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            cfg = {"image": bench.image, "cpu": CPU, "mem": mem}
            results = await client.create_kernels([cfg] * min(BATCH, n - i))
            ids += [str(r["id"]) for r in results if r.get("ok")]
            bad = [r for r in results if not r.get("ok")]
            if bad:
                error = str(bad[0].get("error"))
                say(f"density: {len(bad)} of call {i // BATCH + 1} failed: {error}")
                break
        t_create = time.perf_counter() - t0
        started = len(ids)
        say(f"density: {started} of {n} started in {t_create:.1f} s; "
            f"measuring {seconds:.0f} s idle")
        rss1, _ = await footprint(agent, seconds)
        cids = {k["id"]: k["container_id"] for k in await client.list_kernels()}
        used = [container_memory(str(cids[k])) for k in ids]
        say(f"density: reset_agent of {started} kernels")
        t0 = time.perf_counter()
        destroyed = await client.reset_agent("bench-density")
        t_reset = time.perf_counter() - t0
        if not set(ids) <= set(destroyed):
            raise RuntimeError(f"reset destroyed {len(destroyed)}, not all {started} kernels")
    await agent.stop()

    failed = f"; first failure: {shorten(error)}" if error else ""
    bench.rows.append(Row(
        f"density: kernels of {fmt_bytes(mem)} (min-mem) and {CPU} cpu started, "
        f"{BATCH} per call{failed}",
        fmt_started(started, n, t_create), "-", "-", f"{n} of {n}", started == n))
    if not ids:
        return
    mean, peak = statistics.fmean(used), max(used)
    bench.rows.append(Row(
        f"density: memory in use per idle kernel's container (cgroup, as docker stats; "
        f"mean / max of {started}; baseline: its limit)",
        f"{fmt_bytes(mean)} / {fmt_bytes(peak)}", fmt_bytes(mem), fmt_ratio(peak / mem),
        "max < min-mem", peak < mem))
    per_kernel = (rss1 - rss0) / started
    bench.rows.append(Row(
        f"density: agent RSS with {started} idle minimum kernels (per kernel)",
        f"{fmt_bytes(rss1)} ({per_kernel / 1024:.0f} KiB)", fmt_bytes(rss0),
        fmt_ratio(rss1 / rss0), f"<= {RSS_PER_KERNEL // 1024} KiB per kernel",
        per_kernel <= RSS_PER_KERNEL))
    bench.rows.append(Row(
        f"density: reset_agent of {started} kernels until it answered (per kernel)",
        f"{fmt_seconds(t_reset)} ({fmt_seconds(t_reset / started)})", "-", "-"))
