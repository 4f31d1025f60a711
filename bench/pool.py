"""The ``pool`` figure: create-to-ready with a warm-pool kernel available (docs/pool.md).

An agent of its own (id ``bench-<hex>-pool``, port range 31300-31400) runs with
``[pool."<image>"] size = 1``. Each round waits until its pool kernel is ready, then times a
``create_kernels`` that fits the entry until the kernel ran ``pass``; the floor is the same in
the same run on the cold path (the same config with an ``environ``, which a pool kernel
cannot have been made with). Every kernel is destroyed after its round; the agent is stopped
and its pool kernel removed by the bench's cleanup.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from bench.proc import AgentProc
from bench.report import Row, fmt_ratio, fmt_seconds, median
from kernlet.client import KernletClient

if TYPE_CHECKING:
    from bench.run import Bench

__all__ = ["GOAL", "PORT_RANGE", "fig_pool", "pool_agent"]

PORT_RANGE = (31300, 31400)
CPU, MEM = 0.25, 256 * 1024**2
#: seconds, the p50 goal of a create that takes a pool kernel
GOAL = 0.100


def pool_agent(bench: Bench) -> AgentProc:
    """The figure's agent (not started); registered with the bench's cleanup."""
    agent = AgentProc(bench.root / "pool", f"{bench.agent_id}-pool", bench.nats_url,
                      port_range=PORT_RANGE)
    with agent.config.open("a") as f:
        f.write(f'\n[pool."{bench.image}"]\nsize = 1\ncpu = {CPU}\nmem = {MEM}\n')
    bench.cleanup.agents.append(agent)
    bench.cleanup.agent_ids.append(agent.agent_id)
    return agent


async def _ready_pool(client: KernletClient, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(k.get("pool") and k["state"] == "running" for k in await client.list_kernels()):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("no pool kernel became ready")


async def _create_to_ready(client: KernletClient, config: dict[str, Any]) -> tuple[float, str]:
    t0 = time.perf_counter()
    (res,) = await client.create_kernels([config])
    if not res.get("ok"):
        raise RuntimeError(f"create failed: {res.get('error')}")
    run = await client.execute(res["id"], "pass")
    if run.get("status") != "finished" or run.get("exitCode") != 0:
        raise RuntimeError(f"kernel {res['id']}: pass gave {run}")
    seconds = time.perf_counter() - t0
    await client.destroy_kernel(res["id"])
    return seconds, str(res.get("pool") or "")


async def fig_pool(bench: Bench, agent: AgentProc) -> None:
    from bench.run import say  # run imports this module

    reps = bench.params.create_reps * 2
    config = {"image": bench.image, "cpu": CPU, "mem": MEM}
    async with KernletClient(bench.nats_url, agent_id=agent.agent_id, timeout=600) as client:
        say(f"pool: starting agent {agent.agent_id}; {reps} creates each way (+1 warm-up)")
        await agent.start(client)
        warm, cold = [], []
        for i in range(reps + 1):
            await _ready_pool(client)
            t_warm, taken = await _create_to_ready(client, config)
            if not taken:
                raise RuntimeError("a fitting create did not take the pool kernel")
            t_cold, _ = await _create_to_ready(client, {**config, "environ": {"K": "1"}})
            if i:
                warm.append(t_warm)
                cold.append(t_cold)
        await client.reset_agent("bench-pool")
    await agent.stop()
    w, c = median(warm), median(cold)
    bench.rows.append(Row(
        f"create-to-ready, warm pool, p50 of {reps} (baseline: cold create-to-ready, same "
        "agent, same run)", fmt_seconds(w), fmt_seconds(c), fmt_ratio(w / c),
        f"p50 <= {GOAL * 1000:.0f} ms", w <= GOAL))
