"""The ``fleet`` figures: an agent's idle cost per kernel, and its recovery with many.

The bench's main agent (freshly restarted) is measured with no kernels, then given N idle
kernels of ``container.min-mem`` and an equal part of the cores each (200 in the full run,
at 0.01 cpu), created 20 per ``create_kernels`` call: its RSS per kernel and its CPU in total
over the same time (``/proc``, 1 s samples). Then M of them are kept (100 in the full run) and
the agent is restarted: from its spawn until every kept kernel ran ``pass``, against the start
of an agent with an empty log until it answers ``ping``. The row also says how long the same
runs take on the running agent before the restart: the kernels' own share of the figure.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import TYPE_CHECKING, Any

from bench.proc import AgentProc, cpu_seconds, rss_bytes
from bench.report import Row, fmt_bytes, fmt_ratio, fmt_seconds, median
from kernlet.config import ContainerSection

if TYPE_CHECKING:
    from bench.run import Bench

__all__ = ["fig_fleet", "footprint"]

#: kernels per create_kernels call
BATCH = 20
#: the goals (issue 17): agent RSS per idle kernel, agent CPU in total, recovery's extra time
RSS_PER_KERNEL = 200 * 1024
CPU_TOTAL = 1.0
RECOVERY_EXTRA = 1.0


async def footprint(proc: AgentProc, seconds: float) -> tuple[float, float]:
    """(mean RSS bytes, CPU % of one core) of an agent over ``seconds``."""
    await asyncio.sleep(3.0)  # let start-up work settle
    samples = []
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    while time.monotonic() - t0 < seconds:
        samples.append(rss_bytes(proc.pid))
        await asyncio.sleep(1.0)
    cpu = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0) * 100
    return statistics.fmean(samples), cpu


def fleet_config(bench: Bench, n: int) -> dict[str, Any]:
    """One of ``n`` idle kernels: the smallest memory, an equal part of the cores."""
    cpu = max(0.01, int(len(os.sched_getaffinity(0)) * 1000 / n) / 1000)
    return {"image": bench.image, "cpu": cpu, "mem": ContainerSection().min_mem}


async def create_fleet(bench: Bench, n: int) -> list[str]:
    from bench.run import say  # run imports this module

    cfg = fleet_config(bench, n)
    say(f"footprint: creating {n} kernels of {cfg['cpu']} cpu and {fmt_bytes(cfg['mem'])}, "
        f"{BATCH} per call")
    ids: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        results = await bench.client.create_kernels([cfg] * min(BATCH, n - i))
        ids += [str(r["id"]) for r in results if r.get("ok")]
        bad = [r for r in results if not r.get("ok")]
        if bad:
            await bench.destroy(ids)
            raise RuntimeError(f"{len(bad)} of a batch failed after {len(ids)} kernels: "
                               f"{bad[0].get('error')}")
    say(f"footprint: {n} created in {time.perf_counter() - t0:.1f} s")
    return ids


async def fig_fleet(bench: Bench) -> None:
    """Footprint with N idle kernels, then recovery with M of them; floors: empty agents."""
    from bench.run import say

    p, rows = bench.params, bench.rows
    say(f"footprint: the agent with no kernels, {p.idle_seconds:.0f} s")
    rss0, cpu0 = await footprint(bench.agent, p.idle_seconds)
    ids = await create_fleet(bench, p.idle_kernels)
    say(f"footprint: measuring {p.idle_seconds:.0f} s")
    async with bench.profiled("idle"):
        rss1, cpu1 = await footprint(bench.agent, p.idle_seconds)
    n = len(ids)
    per_kernel = (rss1 - rss0) / n
    rows.append(Row(
        f"footprint: agent RSS with {n} idle kernels (per kernel)",
        f"{fmt_bytes(rss1)} ({per_kernel / 1024:.0f} KiB)", fmt_bytes(rss0),
        fmt_ratio(rss1 / rss0), f"<= {RSS_PER_KERNEL // 1024} KiB per kernel",
        per_kernel <= RSS_PER_KERNEL))
    rows.append(Row(
        f"footprint: agent CPU with {n} idle kernels over {p.idle_seconds:.0f} s",
        f"{cpu1:.2f} % of a core", f"{cpu0:.2f} % of a core",
        fmt_ratio(cpu1 / cpu0) if cpu0 > 0 else "-", f"<= {CPU_TOTAL:g} % of a core",
        cpu1 <= CPU_TOTAL))

    keep, drop = ids[: p.recovery_kernels], ids[p.recovery_kernels:]
    await bench.destroy(drop)
    m = len(keep)
    # what the kernels themselves take for the runs, with no restart: part of the figure
    # that no agent work removes (each has its fleet share of the cores)
    t0 = time.monotonic()
    await asyncio.gather(*(bench.run_ok(k) for k in keep))
    warm = time.monotonic() - t0
    say(f"recovery: restarting the agent with {m} running kernels, {p.recovery_reps}x")
    ours, serving = [], []
    for _ in range(p.recovery_reps):
        await bench.agent.stop()
        t0 = time.monotonic()
        bench.agent.spawn()
        serving.append(await bench.agent.wait_serving(bench.client) - t0)
        await asyncio.gather(*(bench.run_ok(k) for k in keep))
        ours.append(time.monotonic() - t0)
    if bench.profile is not None:  # one more restart, recorded, not counted (py-spy's attach)
        await bench.agent.stop()
        bench.agent.spawn()
        async with bench.profiled("recovery"):
            await bench.agent.wait_serving(bench.client)
            await asyncio.gather(*(bench.run_ok(k) for k in keep))
    say(f"recovery floor: starting an agent with no kernels, {p.recovery_reps + 1}x")
    floor = []
    async with bench.empty_client:
        for _ in range(p.recovery_reps + 1):
            floor.append(await bench.empty.start(bench.empty_client))
            await bench.empty.stop()
    k, b = median(ours), median(floor[1:])
    diff = k - b
    rows.append(Row(
        f"recovery: agent restart with {m} running kernels until all ran code "
        f"(median of {p.recovery_reps}; serving after {fmt_seconds(median(serving))}; "
        f"the same runs with no restart: {fmt_seconds(warm)})",
        fmt_seconds(k), fmt_seconds(b), fmt_ratio(k / b),
        f"difference {diff:+.2f} s <= {RECOVERY_EXTRA:g} s", diff <= RECOVERY_EXTRA))
    await bench.destroy(keep)
