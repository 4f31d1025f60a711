"""A kernel's life as hooks, against FakeRuntime and MemoryEventLog (no Docker).

Races: a destroy arriving while each creation hook is in flight; an agent crash right after
each event of the create is durable, then the recovery; a hook failing and the earlier hooks
undone in reverse order; a restart keeping what the kernel held. Each ends with nothing held:
no container, no dir, no slot.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from life_rig import IMAGE, Rig

from kernlet.actors import steps
from kernlet.actors.hooks import CREATE, RESTART_FROM, creating_from_state, hooks_from
from kernlet.actors.messages import ContainerDied, Destroy, StepDone
from kernlet.actors.pulls import interrupted_pulls
from kernlet.actors.reply import Reply
from kernlet.errors import DockerError
from kernlet.events import ImagePulled, ImagePullProgress, KernelState, State, new_envelope
from kernlet.protocol import (
    CheckAndPull,
    CreateKernels,
    DestroyKernel,
    ResetAgent,
    RestartKernel,
    TriggerBatchExecution,
)

CREATED = ["kernel_preparing", "kernel_creating", "container_created", "kernel_started"]
ENDED = ["kernel_terminating", "kernel_terminated"]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def create(kernel_id: str) -> CreateKernels:
    return CreateKernels.model_validate({"session_id": "s1", "kernel_ids": [kernel_id],
                                         "configs": [{"image": IMAGE, "cpu": 0.5}]})


def assert_nothing_held(rig: Rig, kernel_id: str) -> None:
    assert rig.containers(kernel_id) == []
    assert rig.dirs(kernel_id) == []
    rig.wait(lambda: all(float(v) == 0 for v in rig.slots_used().values()))


def test_the_hook_list_is_the_documented_order() -> None:
    assert [h.name for h in CREATE] == ["image", "pull", "allocate", "dirs", "mounts", "facts",
                                        "network", "container", "runtime"]
    assert [h.name for h in hooks_from(RESTART_FROM)] == ["container", "runtime"]
    # a Docker create, and the hooks whose work runs in a worker thread (a cancel would not
    # stop it, so the undo could run before it ends)
    assert [h.name for h in CREATE if not h.cancellable] == ["mounts", "facts", "container"]


def test_create_then_destroy(rig: Rig) -> None:
    res = rig.call(create("k1"))["kernels"][0]
    assert res["ok"] is True and res["container_id"] == rig.containers("k1")[0]
    assert rig.events("k1") == CREATED
    assert rig.slots_used()["cpu"] == "0.5"
    assert rig.call(DestroyKernel(kernel_id="k1"))["reason"] == "user-requested"
    assert rig.events("k1") == CREATED + ENDED
    assert_nothing_held(rig, "k1")


# the Docker call each hook makes, to hold it in flight (allocate and dirs: see below)
HELD = {"image": "image", "container": "create", "runtime": "start"}


@pytest.mark.parametrize("hook", ["image", "allocate", "dirs", "container", "runtime"])
def test_destroy_during_each_hook(rig: Rig, hook: str, monkeypatch: Any) -> None:
    gate: Any = None
    if hook in HELD:
        gate = rig.docker.block(HELD[hook])
    elif hook == "dirs":
        held = asyncio.Event()
        entered = asyncio.Event()
        real = steps.prepare_dirs

        async def slow(*args: Any) -> Any:
            entered.set()
            await held.wait()
            return await real(*args)

        monkeypatch.setattr(steps, "prepare_dirs", slow)
        gate = type("G", (), {"entered": entered, "release": held.set})()
    else:  # allocate: the ledger answers through the agent actor; hold its mailbox
        _destroy_during_allocate(rig)
        return
    created = rig.submit(create("k1"))
    rig.wait(gate.entered.is_set)
    destroyed = rig.submit(DestroyKernel(kernel_id="k1"))
    rig.wait(lambda: "kernel_terminating" in rig.events("k1") or hook == "container")
    rig.loop.loop.call_soon_threadsafe(gate.release)
    assert destroyed.result(10)["reason"] == "user-requested"
    answer = created.result(10)["kernels"][0]
    assert answer["ok"] is False and answer["error"]["type"] == "KernelNotRunning"
    types = rig.events("k1")
    assert types[-2:] == ENDED and "kernel_started" not in types
    assert_nothing_held(rig, "k1")


@pytest.mark.parametrize("event", ["kernel_preparing", "kernel_creating", "container_created",
                                   "kernel_started"])
def test_crash_after_each_event_then_recovery(rig: Rig, event: str) -> None:
    rig.crash_after(event)
    rig.submit(create("k1"))
    store = rig.restart_agent()
    if event == "kernel_started":  # a running kernel is re-adopted, and still works
        rig.wait(lambda: rig.call(_list())["kernels"] != [])
        assert rig.call(_list())["kernels"][0]["state"] == "running"
        rig.call(DestroyKernel(kernel_id="k1"))
        assert rig.events("k1", store)[-2:] == ENDED
    else:  # mid-creation: rolled back
        rig.wait(lambda: rig.events("k1", store)[-1:] == ["kernel_terminated"])
        assert "agent-restarted-during-creation" in _reasons(rig, store, "k1")
    assert_nothing_held(rig, "k1")


def test_a_failing_hook_undoes_the_earlier_ones_in_reverse(rig: Rig) -> None:
    rig.docker.fail_next("create", DockerError("no space left on device"))
    answer = rig.call(create("k1"))["kernels"][0]
    assert answer["ok"] is False and answer["error"]["type"] == "CreationFailed"
    assert "no space left" in answer["error"]["message"]
    assert rig.events("k1") == ["kernel_preparing", "kernel_creating", *ENDED]
    # downs, last first: container (list + remove: nothing), dirs, allocate
    after = [c[0] for c in rig.docker.calls[[c[0] for c in rig.docker.calls].index("create"):]]
    assert after == ["create", "list"]
    assert_nothing_held(rig, "k1")


def test_restart_keeps_what_the_kernel_held(rig: Rig) -> None:
    rig.call(create("k1"))
    first = rig.loop.run(rig.store.read_stream("k1"))
    old = rig.containers("k1")
    res = rig.call(RestartKernel(kernel_id="k1"))
    assert res["ok"] is True and rig.containers("k1") != old and len(rig.containers("k1")) == 1
    events = rig.loop.run(rig.store.read_stream("k1"))
    creating = [e.body for e in events if e.type == "kernel_creating"]
    assert len(creating) == 2 and creating[0] == creating[1]
    assert [e.type for e in events[len(first):]] == [
        "kernel_restarting", "kernel_creating", "container_created", "kernel_started"]
    rig.call(DestroyKernel(kernel_id="k1"))
    assert_nothing_held(rig, "k1")


def test_creating_from_state_keeps_devices() -> None:
    state = KernelState("k1", State.RUNNING, 5, slots={"cpu": "1", "cuda.shares": "0.5"},
                        cpuset=(1,), ports=(30001,), scratch_dir="/x",
                        devices={"cuda.shares": {"0": "0.5"}})
    body = creating_from_state(state)
    assert body.devices == {"cuda.shares": {"0": "0.5"}} and body.slots == state.slots
    assert (body.cpuset, body.ports, body.scratch_dir) == ((1,), (30001,), "/x")


def test_container_death_during_start_fails_the_create(rig: Rig) -> None:
    gate = rig.docker.block("start", after=True)
    created = rig.submit(create("k1"))
    rig.wait(gate.entered.is_set)
    cid = rig.containers("k1")[0]
    rig.on_loop(lambda: rig.docker.kill_container(cid, 3))
    rig.agent.proxy().kernels.get()["k1"].tell(ContainerDied(cid, "die", 3))
    rig.loop.loop.call_soon_threadsafe(gate.release)
    answer = created.result(10)["kernels"][0]
    assert answer["ok"] is False and answer["error"]["type"] == "CreationFailed"
    rig.wait(lambda: rig.events("k1")[-1:] == ["kernel_terminated"])
    assert_nothing_held(rig, "k1")


def _destroy_during_allocate(rig: Rig) -> None:
    image = rig.docker.block("image")
    created = rig.submit(create("k1"))
    rig.wait(image.entered.is_set)
    kernel = rig.agent.proxy().kernels.get()["k1"]
    held = threading.Event()
    rig.agent.tell(StepDone(then=lambda _: held.wait(10), fail=print, result=None, error=None))
    rig.loop.loop.call_soon_threadsafe(image.release)
    rig.wait(lambda: kernel.proxy().life.get().w.step == "allocate")
    done = rig.loop.submit(_destroy_directly(rig, kernel))
    rig.wait(lambda: "kernel_terminating" in rig.events("k1"))
    held.set()  # the ledger answers now: what it gave goes back in the teardown
    assert done.result(10)["reason"] == "user-requested"
    answer = created.result(10)["kernels"][0]
    assert answer["ok"] is False and answer["error"]["type"] == "KernelNotRunning"
    assert rig.events("k1") == ["kernel_preparing", *ENDED]
    assert_nothing_held(rig, "k1")


async def _destroy_directly(rig: Rig, kernel: Any) -> Any:
    reply = Reply.new(asyncio.get_running_loop())
    kernel.tell(Destroy(reason="user-requested", reply=reply))
    return await asyncio.wait_for(reply.future, 10)


def _list() -> Any:
    from kernlet.protocol import ListKernels
    return ListKernels()


def _reasons(rig: Rig, store: Any, kernel_id: str) -> list[str]:
    return [getattr(e.body, "reason", "") for e in rig.loop.run(store.read_stream(kernel_id))]


def test_a_batch_job_adopted_after_a_crash_still_ends_with_its_session_event(
        rig: Rig) -> None:
    rig.call(create("k1"))
    rig.crash_after("execution_started")
    run = rig.call(TriggerBatchExecution(kernel_id="k1", code="make", timeout=600))["run_id"]
    rig.docker.busy = run  # the job goes on in the container while no agent listens
    statuses = rig.docker.statuses
    store = rig.restart_agent()
    rig.wait(lambda: rig.call(_list())["kernels"] != [])
    started = [e.body for e in rig.loop.run(store.read_stream("k1"))
               if e.type == "execution_started"]
    assert started[-1].session is True and started[-1].timeout == 600
    # the new agent's channel is connected (the old agent's may linger: finishing the run
    # on that one alone would be heard by nobody)
    rig.wait(lambda: rig.containers("k1") and rig.docker.statuses > statuses)
    rig.on_loop(lambda: rig.docker.finish(run, 0))
    rig.wait(lambda: "session_success" in rig.events("k1", store))
    assert rig.events("k1", store)[-2:] == ["execution_finished", "session_success"]
    rig.call(DestroyKernel(kernel_id="k1"))
    assert_nothing_held(rig, "k1")


def test_an_adopted_run_keeps_its_time_limit(rig: Rig) -> None:
    rig.call(create("k1"))
    rig.crash_after("execution_started")
    run = rig.call(TriggerBatchExecution(kernel_id="k1", code="sleep 1000", timeout=0.2))
    rig.docker.busy = run["run_id"]
    time.sleep(0.3)  # the limit passes while no agent runs
    store = rig.restart_agent()
    rig.wait(lambda: "execution_timeout" in rig.events("k1", store))
    limit = next(e.body for e in rig.loop.run(store.read_stream("k1"))
                 if e.type == "execution_timeout")
    assert limit.run_id == run["run_id"] and limit.timeout == 0.2
    rig.wait(lambda: any(m.get("op") == "interrupt" for m in rig.docker.received))
    rig.call(DestroyKernel(kernel_id="k1"))
    assert_nothing_held(rig, "k1")


def test_a_pull_cut_short_by_a_crash_ends_with_image_pulled(rig: Rig) -> None:
    image = "localhost:5000/team/python:3.11"
    rig.docker.add_image(image, {"ai.kernlet.kernelspec": "1"}, local=False)
    rig.crash_after("image_pull_progress")
    rig.docker.block("pull")  # the pull is in flight when the agent dies
    assert rig.call(CheckAndPull(image=image))["status"] == "pulling"
    store = rig.restart_agent()
    rig.wait(lambda: "image_pulled" in rig.events("_agent", store))
    events = rig.loop.run(store.read_stream("_agent"))
    progress = [e.body.status for e in events if e.type == "image_pull_progress"]
    assert progress == ["started", "resumed after an agent restart"]
    pulled = next(e.body for e in events if e.type == "image_pulled")
    assert pulled.image == image and pulled.ok is True
    assert interrupted_pulls(events) == []


def test_interrupted_pulls_reads_the_log() -> None:
    def ev(seq: int, body: Any) -> Any:
        return new_envelope("_agent", seq, body)
    log = [ev(1, ImagePullProgress(image="a", status="started")),
           ev(2, ImagePullProgress(image="b", status="started")),
           ev(3, ImagePulled(image="a", ok=False, error="x")),
           ev(4, ImagePullProgress(image="c", status="started")),
           ev(5, ImagePulled(image="c", ok=True))]
    assert interrupted_pulls(log) == ["b"]


def test_reset_tears_down_in_waves_of_the_teardown_bound(rig: Rig) -> None:
    ids = [f"k{i}" for i in range(4)]  # the rig has room for 4 kernels of 0.5 cpu
    for kernel_id in ids:
        rig.call(create(kernel_id))
    running, peak = 0, 0
    real_stop = rig.docker.stop

    async def counted_stop(container_id: str, grace: float) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        await real_stop(container_id, grace)
        running -= 1

    rig.docker.stop = counted_stop  # type: ignore[method-assign]
    assert sorted(rig.call(ResetAgent())["destroyed"]) == ids
    assert peak == 2  # the rig's teardown_slots
    for kernel_id in ids:
        assert_nothing_held(rig, kernel_id)
