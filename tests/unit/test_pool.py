"""The warm pool (docs/pool.md) against FakeRuntime and MemoryEventLog: the fit rule, a take
(same container, an ordinary create's events, the holdings moved), the cold path, the refill
and its backoff, an agent crash and restart with pool and taken kernels, reset and sync."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from life_rig import IMAGE, Rig

from kernlet.actors.pool import fitting_entry, pool_config
from kernlet.actors.pool_take import HandOver, taken_envelopes
from kernlet.config import AgentConfig
from kernlet.events import State, replay
from kernlet.protocol import (
    CreateKernels,
    DestroyKernel,
    ListKernels,
    Ping,
    ResetAgent,
    SyncKernelRegistry,
)

CREATED = ["kernel_preparing", "kernel_creating", "container_created", "kernel_started"]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, pool={IMAGE: {"size": 1, "cpu": 0.5, "mem": "256m"}})
    yield r
    r.close()


def create(kernel_id: str, **config: Any) -> CreateKernels:
    return CreateKernels.model_validate({
        "session_id": "s1", "kernel_ids": [kernel_id],
        "configs": [{"image": IMAGE, "cpu": 0.5, "mem": 256 * 1024**2, **config}]})


def pool_kernels(rig: Rig, running: bool = True) -> list[dict[str, Any]]:
    return [k for k in rig.call(ListKernels())["kernels"]
            if k["pool"] and (not running or k["state"] == "running")]


def wait_pool(rig: Rig, n: int = 1) -> list[dict[str, Any]]:
    rig.wait(lambda: len(pool_kernels(rig)) == n)
    return pool_kernels(rig)


def test_the_fit_rule() -> None:
    cfg = AgentConfig.model_validate({"pool": {IMAGE: {"size": 1, "mem": "256m"}}})
    base = {"image": IMAGE, "cpu": None, "mem": 256 * 1024**2, "shm_size": None}
    assert fitting_entry(cfg, base, cluster=False) == IMAGE
    assert fitting_entry(cfg, {**base, "cpu": 1.0}, cluster=False) == IMAGE  # the default
    assert fitting_entry(cfg, base, cluster=True) is None
    for unfit in ({"cpu": 2.0}, {"mem": 512 * 1024**2}, {"shm_size": 2 * 1024**2},
                  {"image": "other:1"}, {"environ": {"A": "1"}}, {"bootstrap": "true"},
                  {"mounts": [{"source": "r:", "target": "d"}]}, {"preopen_ports": [8080]},
                  {"slots": {"cuda.device": 1}}):
        assert fitting_entry(cfg, {**base, **unfit}, cluster=False) is None, unfit
    off = AgentConfig.model_validate({"pool": {IMAGE: {"size": 0}}})
    assert fitting_entry(off, base, cluster=False) is None
    assert fitting_entry(AgentConfig(), base, cluster=False) is None  # off by default


def test_the_take_is_one_transaction_of_an_ordinary_create() -> None:
    cfg = AgentConfig()
    events = [*taken_envelopes_of(cfg)]
    pool_state = replay(events[:-4])
    assert pool_state is not None and pool_state.state is State.RUNNING
    req = HandOver("k1", "s1", {"image": IMAGE}, lambda _: None, 0.0)
    take = taken_envelopes(pool_state, req)
    assert [(e.kernel_id, e.type) for e in take] == [
        ("pool-1", "kernel_handed_over"), *(("k1", t) for t in CREATED)]
    after = replay([*events[:-4], take[0]])
    assert after is not None and after.state is State.TERMINATED
    assert after.reason == "pool-taken"
    taker = replay(take[1:])
    assert taker is not None and taker.state is State.RUNNING
    assert taker.container_id == pool_state.container_id == "c1"
    assert taker.slots == pool_state.slots and taker.ports == pool_state.ports
    assert taker.config["pool"] == {"from": "pool-1"}
    assert taker.info["id"] == "k1" and taker.info["session_id"] == "s1"
    assert taker.info["pool"] == "pool-1"


def taken_envelopes_of(cfg: AgentConfig) -> list[Any]:
    """A pool kernel's whole create, then (as padding for the slicing above) four more."""
    from kernlet.events import (
        ContainerCreated,
        KernelCreating,
        KernelPreparing,
        KernelStarted,
        new_envelope,
    )
    config = pool_config(cfg, IMAGE, cfg.model_validate({"pool": {IMAGE: {}}}).pool[IMAGE])
    bodies = [KernelPreparing("pool", IMAGE, config),
              KernelCreating(slots={"cpu": "1", "mem": "1"}, ports=(30001,)),
              ContainerCreated("c1"), KernelStarted("c1", {"id": "pool-1"})]
    envs = [new_envelope("pool-1", i, b) for i, b in enumerate(bodies, 1)]
    return [*envs, *envs]


def test_a_fitting_create_takes_the_pool_kernel_and_the_pool_refills(rig: Rig) -> None:
    (pooled,) = wait_pool(rig)
    assert pooled["session_id"] == "pool"
    assert rig.docker.containers[pooled["container_id"]].spec.labels["ai.kernlet.pool"] == IMAGE
    result = rig.call(create("k1"))["kernels"][0]
    assert result["ok"], result
    assert result["id"] == "k1" and result["container_id"] == pooled["container_id"]
    assert result["pool"] == pooled["id"]
    assert rig.events("k1") == CREATED
    assert rig.events(pooled["id"])[-1] == "kernel_handed_over"
    (taken,) = [k for k in rig.call(ListKernels())["kernels"] if k["id"] == "k1"]
    assert taken["state"] == "running" and taken["session_id"] == "s1" and not taken["pool"]
    # the runtime answers the taker on its own channel (the pool kernel's dirs)
    assert rig.docker.statuses >= 2
    (fresh,) = wait_pool(rig)
    assert fresh["id"] != pooled["id"] and fresh["container_id"] != pooled["container_id"]
    rig.wait(lambda: rig.slots_used()["cpu"] == "1")  # the taker and the new pool kernel
    # a taken kernel is never returned to the pool: destroyed, it is gone with all it held
    rig.call(DestroyKernel(kernel_id="k1"))
    assert pooled["container_id"] not in rig.docker.containers
    assert rig.dirs(pooled["id"]) == [] and rig.dirs("k1") == []
    rig.wait(lambda: rig.slots_used()["cpu"] == "0.5")
    assert [k["id"] for k in pool_kernels(rig)] == [fresh["id"]]


def test_a_create_that_does_not_fit_is_cold(rig: Rig) -> None:
    (pooled,) = wait_pool(rig)
    result = rig.call(create("k1", environ={"A": "1"}))["kernels"][0]
    assert result["ok"] and result["container_id"] != pooled["container_id"]
    assert "pool" not in result
    assert [k["id"] for k in pool_kernels(rig)] == [pooled["id"]]


def test_with_no_ready_pool_kernel_the_create_is_cold(rig: Rig) -> None:
    wait_pool(rig)
    first = rig.submit(create("k1"))
    second = rig.submit(create("k2"))
    results = [f.result(20)["kernels"][0] for f in (first, second)]
    assert all(r["ok"] for r in results), results
    assert sorted(bool(r.get("pool")) for r in results) == [False, True]


def test_pool_and_taken_kernels_survive_an_agent_restart(rig: Rig) -> None:
    (pooled,) = wait_pool(rig)
    assert rig.call(create("k1"))["kernels"][0]["ok"]
    (second,) = wait_pool(rig)
    rig.crash_after("kernel_started")
    rig.store.crashed.set()  # freeze the log now, as a SIGKILL would
    rig.restart_agent()
    kernels = {k["id"]: k for k in rig.call(ListKernels())["kernels"]}
    assert kernels["k1"]["state"] == "running"
    assert kernels["k1"]["container_id"] == pooled["container_id"]
    assert kernels[second["id"]]["pool"] == IMAGE
    assert [k["id"] for k in wait_pool(rig)] == [second["id"]]  # no extra pool kernel
    # the re-adopted pool kernel is taken like before the restart
    result = rig.call(create("k2"))["kernels"][0]
    assert result["ok"] and result["container_id"] == second["container_id"]
    rig.call(DestroyKernel(kernel_id="k1"))
    assert pooled["container_id"] not in rig.docker.containers
    assert rig.dirs(pooled["id"]) == []


def test_sync_keeps_pool_kernels_and_reset_removes_them_then_refill(rig: Rig) -> None:
    (pooled,) = wait_pool(rig)
    assert rig.call(SyncKernelRegistry(kernel_ids=[]))["destroyed"] == []
    assert rig.call(ResetAgent())["destroyed"] == [pooled["id"]]
    assert pooled["container_id"] not in rig.docker.containers
    assert rig.dirs(pooled["id"]) == []
    (again,) = wait_pool(rig)  # the refill starts again (after its backoff)
    assert again["id"] != pooled["id"]


def test_a_failing_refill_backs_off_and_the_agent_keeps_running(tmp_path: Path) -> None:
    rig = Rig(tmp_path, pool={"kernlet/missing:1": {"size": 1}})
    try:
        tried = lambda: {k for k in rig.loop.run(rig.store.kernel_ids())  # noqa: E731
                         if k.startswith("pool-")}
        rig.wait(lambda: len(tried()) >= 2, timeout=15)
        for kernel_id in tried():
            assert rig.events(kernel_id)[-1] in ("kernel_terminated", "kernel_preparing",
                                                 "kernel_terminating")
        assert rig.call(Ping(msg="x"))["msg"] == "x"
        assert not rig.docker.containers
    finally:
        rig.close()
