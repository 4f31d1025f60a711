"""FakeRuntime: the runtime contract (as the real driver passes it), and its test controls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fixtures.image_contract import image_scenario
from fixtures.runtime_contract import Programs, scenario
from kernlet.drivers.container_runtime import ContainerEvent, ContainerSpec
from kernlet.drivers.fake_runtime import FakeRuntime
from kernlet.errors import ContainerNotFound, DockerError, ImageNotFound

IMAGE = "kernlet/python:3.11"


class FakePrograms(Programs):
    def __init__(self, rt: FakeRuntime) -> None:
        self.rt = rt

    def exited(self, container_id: str, code: int, output: str) -> None:
        self.rt.containers[container_id].output = output
        self.rt.kill_container(container_id, code)

    def ignores_stop(self, container_id: str) -> None:
        self.rt.containers[container_id].ignores_stop = True


@pytest.fixture
def rt() -> FakeRuntime:
    fake = FakeRuntime(clock=lambda: 1000.0)
    fake.add_image(IMAGE, {"ai.kernlet.kernelspec": "1"})
    return fake


def spec(name: str, **labels: str) -> ContainerSpec:
    return ContainerSpec(name=name, image=IMAGE, cmd=("sleep", "30"), labels=labels)


async def subscribe(
    rt: FakeRuntime, **labels: str
) -> tuple[asyncio.Queue[ContainerEvent], asyncio.Task[None]]:
    stream: AsyncIterator[ContainerEvent] = rt.events(labels)
    queue: asyncio.Queue[ContainerEvent] = asyncio.Queue()

    async def pump() -> None:
        async for ev in stream:
            queue.put_nowait(ev)

    task = asyncio.create_task(pump())
    await asyncio.sleep(0)  # the first __anext__ subscribes
    return queue, task


def drain(q: asyncio.Queue[ContainerEvent]) -> list[tuple[str, int | None]]:
    out = []
    while not q.empty():
        ev = q.get_nowait()
        out.append((ev.action, ev.exit_code))
    return out


async def test_the_fake_passes_the_runtime_contract(rt: FakeRuntime) -> None:
    await scenario(rt, IMAGE, FakePrograms(rt))


async def test_lifecycle_states_exit_codes_and_list_by_label(rt: FakeRuntime) -> None:
    a = await rt.create(spec("a", k="1", role="x"))
    b = await rt.create(spec("b", k="1", role="y"))
    assert a != b and len(a) == 64
    assert [i.id for i in await rt.list({"k": "1"})] == [b, a]  # newest first, like Docker
    assert [i.id for i in await rt.list({"k": "1", "role": "x"})] == [a]
    assert await rt.list({"k": "2"}) == []
    info = await rt.inspect(a)
    assert (info.status, info.running, info.exit_code, info.created) == ("created", False, 0,
                                                                         1000.0)
    await rt.start(a)
    assert (await rt.inspect(a)).exit_code is None
    await rt.stop(a, 5)
    info = await rt.inspect(a)
    assert (info.status, info.running, info.exit_code) == ("exited", False, 0)
    await rt.stop(a, 5)  # not running: nothing happens
    await rt.remove(a)
    with pytest.raises(ContainerNotFound):
        await rt.inspect(a)
    await rt.remove(a)  # gone already: not an error
    assert [i.id for i in await rt.list({"k": "1"})] == [b]


async def test_events_on_death_stop_and_remove_reach_matching_subscribers(
    rt: FakeRuntime,
) -> None:
    q, task = await subscribe(rt, k="1")
    other_q, other_task = await subscribe(rt, k="2")
    a = await rt.create(spec("a", k="1"))
    await rt.start(a)
    rt.kill_container(a, 137, oom=True)
    info = await rt.inspect(a)
    assert (info.exit_code, info.oom_killed) == (137, True)
    await rt.start(a)
    rt.containers[a].ignores_stop = True
    await rt.stop(a, 1)
    await rt.start(a)
    await rt.remove(a)
    await asyncio.sleep(0)
    assert drain(q) == [
        ("create", None), ("start", None), ("oom", None), ("die", 137),
        ("start", None), ("kill", None), ("kill", None), ("die", 137), ("stop", None),
        ("start", None), ("kill", None), ("die", 137), ("destroy", None),
    ]
    assert drain(other_q) == []
    for t in (task, other_task):
        t.cancel()
    await asyncio.gather(task, other_task, return_exceptions=True)


async def test_die_event_carries_the_labels_and_exit_code(rt: FakeRuntime) -> None:
    q, task = await subscribe(rt, k="1")
    a = await rt.create(spec("a", k="1"))
    await rt.start(a)
    rt.kill_container(a, 3)
    await asyncio.sleep(0)
    events = [q.get_nowait() for _ in range(3)]
    die = events[-1]
    assert (die.action, die.container_id, die.exit_code) == ("die", a, 3)
    assert die.labels["k"] == "1" and die.labels["name"] == "a" and die.labels["exitCode"] == "3"
    with pytest.raises(ValueError, match="not running"):
        rt.kill_container(a, 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_images_pull_and_missing_things(rt: FakeRuntime) -> None:
    assert [i.tags for i in await rt.images("ai.kernlet.kernelspec")] == [(IMAGE,)]
    assert await rt.images("ai.kernlet.kernelspec=2") == []
    with pytest.raises(ImageNotFound):
        await rt.image("reg.example/x:1")
    rt.add_image("reg.example/x:1", {"a": "b"}, local=False)
    with pytest.raises(ImageNotFound):
        await rt.image("reg.example/x:1")
    seen = []
    pulled = await rt.pull("reg.example/x:1", seen.append)
    assert (await rt.image("reg.example/x:1")) == pulled and seen
    with pytest.raises(DockerError):
        await rt.pull("reg.example/none:1")
    await rt.create(spec("a"))
    with pytest.raises(DockerError, match="already in use"):
        await rt.create(spec("a"))


async def test_fail_next_fails_one_call_only(rt: FakeRuntime) -> None:
    rt.fail_next("ping", DockerError("down"))
    with pytest.raises(DockerError, match="down"):
        await rt.ping()
    await rt.ping()
    rt.fail_next("create", DockerError("no space"))
    with pytest.raises(DockerError, match="no space"):
        await rt.create(spec("a"))
    assert rt.containers == {}  # the failed create left nothing
    with pytest.raises(ValueError, match="no method"):
        rt.fail_next("crate", DockerError("typo"))


async def test_block_holds_a_create_in_flight_until_released(rt: FakeRuntime) -> None:
    gate = rt.block("create")
    creating = asyncio.create_task(rt.create(spec("a", k="1")))
    await asyncio.wait_for(gate.entered.wait(), 10)  # bound: a broken gate fails, not hangs
    assert not creating.done() and await rt.list({"k": "1"}) == []  # e.g. a destroy now
    gate.release()
    cid = await creating
    assert [i.id for i in await rt.list({"k": "1"})] == [cid]
    await rt.create(spec("b"))  # only the next call was held


async def test_block_after_holds_the_reply_once_the_effect_happened(rt: FakeRuntime) -> None:
    gate = rt.block("create", after=True)
    creating = asyncio.create_task(rt.create(spec("a", k="1")))
    await asyncio.wait_for(gate.entered.wait(), 10)  # bound: a broken gate fails, not hangs
    assert not creating.done() and len(await rt.list({"k": "1"})) == 1
    gate.release()
    assert (await creating) == next(iter(rt.containers))


async def test_calls_are_logged_in_order(rt: FakeRuntime) -> None:
    cid = await rt.create(spec("a", k="1"))
    await rt.start(cid)
    assert await rt.exec(cid, ["echo", "hi"], wait=1) == 0
    await rt.stop(cid, 2)
    await rt.list({"k": "1"})
    assert rt.calls == [("create", "a"), ("start", cid), ("exec", cid, "echo", "hi"),
                        ("stop", cid, "2"), ("list", "k=1")]


async def test_logs_tail_and_exec_on_stopped(rt: FakeRuntime) -> None:
    cid = await rt.create(spec("a"))
    rt.containers[cid].output = "1\n2\n3\n"
    assert await rt.logs(cid, tail=2) == "2\n3\n"
    with pytest.raises(DockerError, match="not running"):
        await rt.exec(cid, ["true"])
    rt.containers[cid].ignores_stop = True
    await rt.start(cid)
    rt.containers[cid].exec_exit_code = 5
    assert await rt.exec(cid, ["false"], wait=1) == 5


async def test_the_fake_passes_the_image_contract(rt: FakeRuntime) -> None:
    await image_scenario(rt, IMAGE)
