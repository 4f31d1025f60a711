"""The ``concurrent`` figure: n kernels in one ``create_kernels`` call, each running ``pass``,
against n containers created, started and made ready directly (bench/direct.py) with the same
slots and cores.

Which side goes first alternates from one round to the next (ours first in the even rounds),
so that neither side always runs right after the other's teardown. One round is not enough:
single rounds of 4 kernels spread from 0.72 to 1.15 within an hour, in either order
(docs/performance.md, 2026-12-03). The floor of a round that goes first uses the slots and
cores the agent gave in the round before.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from bench.direct import Placement
from bench.proc import cpu_seconds
from bench.report import Row, fmt_ratio, fmt_seconds, median

if TYPE_CHECKING:
    from bench.run import Bench

__all__ = ["fig_concurrent"]


async def _ours(bench: Bench, n: int) -> tuple[float, float, list[Placement]]:
    """Seconds until all n ran ``pass``, the agent's cpu seconds meanwhile, the placements."""
    async with bench.profiled("concurrent"):
        c0 = cpu_seconds(bench.agent.pid)
        t0 = time.perf_counter()
        ids = await bench.create(n)
        await asyncio.gather(*(bench.run_ok(k) for k in ids))
        took = time.perf_counter() - t0
        cpu = cpu_seconds(bench.agent.pid) - c0
    placements = await bench.placements(ids)
    await bench.destroy(ids)
    return took, cpu, placements


async def _floor(bench: Bench, placements: list[Placement]) -> float:
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(bench.direct_ready(p) for p in placements))
        return time.perf_counter() - t0
    finally:
        await bench.direct.remove_all()


async def fig_concurrent(bench: Bench) -> None:
    from bench.run import say  # run imports this module

    p = bench.params
    n = p.concurrent
    say(f"concurrent creates: {n} kernels, {p.concurrent_reps} time(s) each way, "
        "the order alternating")
    ours: list[float] = []
    floor: list[float] = []
    placements: list[Placement] = []
    for i in range(p.concurrent_reps):
        ours_first = i % 2 == 0
        if not ours_first:
            floor.append(await _floor(bench, placements))
        took, cpu, placements = await _ours(bench, n)
        if ours_first:
            floor.append(await _floor(bench, placements))
        ours.append(took)
        say(f"  round {i + 1}: ours {took:.2f} s (agent cpu {cpu:.2f} s), direct "
            f"{floor[-1]:.2f} s ({'ours' if ours_first else 'direct'} first)")
    k, b = median(ours), median(floor)
    bench.rows.append(Row(
        f"concurrent creates, {n} kernels of {bench.config(n)['cpu']} cpu in one call "
        f"(median of {p.concurrent_reps}, order alternating)",
        fmt_seconds(k), fmt_seconds(b), fmt_ratio(k / b), "ratio <= 1.05", k / b <= 1.05))
