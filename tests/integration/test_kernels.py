"""End to end over NATS on real Docker: create, run code, stream output, destroy."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from typing import Any

import pytest

from integration.conftest import IMAGE, AgentProcess, docker, wait_for
from kernlet.client import EventSubscriber, KernletClient

pytestmark = pytest.mark.integration


async def collect(client: KernletClient, kid: str, code: str, **kw: Any) -> tuple[list, dict]:
    items: list[list[Any]] = []
    result = await client.run(kid, code, on_output=lambda k, d: items.append([k, d]), **kw)
    return items, result


def text(items: list[list[Any]], kind: str) -> str:
    return "".join(d for k, d in items if k == kind)


async def test_kernel_lifecycle_runs_code_and_cleans_up(
    client: KernletClient, agent: AgentProcess
) -> None:
    events = await EventSubscriber(client.nc, agent_id=agent.agent_id).start()
    k = await client.create_kernel(IMAGE, cpu=1, mem=512 * 1024**2)
    kid = k["id"]
    assert k["ok"] and k["container_id"]
    inspect = docker("inspect", "-f",
                     "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.CpuShares}} "
                     "{{.Config.User}} {{.HostConfig.PidsLimit}} {{.HostConfig.SecurityOpt}}",
                     k["container_id"])
    # cpu: guaranteed by shares (1024 a core), no quota by default (container.cpu-limit)
    assert inspect.split()[:5] == [str(512 * 1024**2), "0", "1024", "1000:1000", "1024"]
    assert "no-new-privileges" in inspect

    items, res = await collect(client, kid, "print('hello'); import sys; print('oops', file=sys.stderr)")
    assert res["status"] == "finished" and res["exitCode"] == 0
    assert text(items, "stdout") == "hello\n"
    assert "oops" in text(items, "stderr")

    items, res = await collect(client, kid, "1/0")
    assert res["exitCode"] == 1
    assert "ZeroDivisionError" in text(items, "stderr")

    # state survives between runs
    items, res = await collect(client, kid, "x = 41\n")
    items, res = await collect(client, kid, "print(x + 1)")
    assert text(items, "stdout") == "42\n"

    # a plot arrives as a PNG
    items, res = await collect(
        client, kid, "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"
    )
    media = [d for k, d in items if k == "media"]
    assert media and media[0]["type"] == "image/png"
    png = base64.b64decode(media[0]["data"].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    # input() is answered through an input request
    prompts: list[dict[str, Any]] = []

    def answer(prompt: dict[str, Any]) -> str:
        prompts.append(prompt)
        return "kernlet"

    items, res = await collect(client, kid, "name = input('who? ')\nprint('hi', name)",
                               on_input=answer)
    assert prompts and prompts[0]["prompt"] == "who? "
    assert "hi kernlet" in text(items, "stdout")

    # completion
    comp = await client.complete(kid, "import os; os.pa")
    assert "os.path" in comp["matches"] or "path" in comp["matches"]

    # destroy leaves nothing behind
    res = await client.destroy_kernel(kid)
    assert res["reason"] == "user-requested"
    assert not [c for c in agent.containers() if c.startswith(k["container_id"][:12])]
    assert kid not in agent.scratch_dirs()

    seen = []
    while True:
        ev = await events.next(timeout=10)
        if ev["kernel_id"] == kid:
            seen.append(ev["type"])
        if ev["type"] == "kernel_terminated" and ev["kernel_id"] == kid:
            break
    await events.stop()
    assert seen[:5] == ["kernel_preparing", "kernel_creating", "container_created",
                        "kernel_started", "execution_started"]
    assert "execution_finished" in seen
    log = await client.events(kid)
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert log[-1]["type"] == "kernel_terminated"


async def test_interrupt_keeps_kernel_usable(client: KernletClient) -> None:
    kid = (await client.create_kernel(IMAGE))["id"]
    try:
        await client.run(kid, "y = 7")
        run = asyncio.create_task(collect(client, kid, "import time\nwhile True: time.sleep(0.1)"))
        await asyncio.sleep(1.5)
        assert not run.done()
        await client.interrupt(kid)
        items, res = await asyncio.wait_for(run, 20)
        assert res["status"] == "finished"
        assert "KeyboardInterrupt" in text(items, "stderr")
        items, res = await collect(client, kid, "print(y * 6)")
        assert text(items, "stdout") == "42\n"
    finally:
        await client.destroy_kernel(kid)


async def test_batch_mode_exit_codes(client: KernletClient) -> None:
    kid = (await client.create_kernel(IMAGE))["id"]
    try:
        items, res = await collect(client, kid, "", mode="batch",
                                   opts={"build": "echo building", "exec": "echo run; exit 3"})
        assert res["exitCode"] == 3
        assert "building" in text(items, "stdout") and "run" in text(items, "stdout")
        items, res = await collect(client, kid, "", mode="batch",
                                   opts={"build": "exit 2", "exec": "echo never"})
        assert res["exitCode"] == 127
        assert "never" not in text(items, "stdout")
    finally:
        await client.destroy_kernel(kid)


async def test_batched_execute_reports_continued_then_finished(client: KernletClient) -> None:
    kid = (await client.create_kernel(IMAGE))["id"]
    try:
        code = "import time\nprint('a', flush=True)\ntime.sleep(2)\nprint('b')"
        first = await client.execute(kid, code, run_id="r1", flush_timeout=0.8)
        assert first["status"] == "continued"
        console = list(first["console"])
        res = first
        while res["status"] == "continued":
            res = await client.execute(kid, mode="continue", run_id="r1", flush_timeout=5)
            console += res["console"]
        assert res["status"] == "finished" and res["exitCode"] == 0
        assert "".join(d for k, d in console if k == "stdout") == "a\nb\n"
    finally:
        await client.destroy_kernel(kid)


async def test_five_kernels_in_one_call(client: KernletClient, agent: AgentProcess) -> None:
    results = await client.create_kernels([{"image": IMAGE, "mem": 256 * 1024**2}] * 5)
    assert len(results) == 5 and all(r["ok"] for r in results), results
    ids = [r["id"] for r in results]
    try:
        outs = await asyncio.gather(*(collect(client, k, f"print('{k}')") for k in ids))
        assert [text(items, "stdout").strip() for items, _ in outs] == ids
        listed = {k["id"] for k in await client.list_kernels()}
        assert set(ids) <= listed
    finally:
        await asyncio.gather(*(client.destroy_kernel(k) for k in ids))
    assert not set(ids) & set(agent.scratch_dirs())


async def test_container_killed_behind_agents_back(
    client: KernletClient, agent: AgentProcess
) -> None:
    k = await client.create_kernel(IMAGE)
    docker("kill", "--signal", "KILL", k["container_id"])

    async def terminated() -> dict[str, Any] | None:
        log = await client.events(k["id"])
        return log[-1] if log[-1]["type"] == "kernel_terminated" else None

    last = await wait_for(terminated, timeout=30)
    assert last["payload"]["exit_code"] == 137
    assert last["payload"]["reason"] == "self-terminated"
    await wait_for(lambda: k["id"] not in agent.scratch_dirs())
    assert k["container_id"] not in " ".join(agent.containers())


async def test_container_removed_behind_agents_back(
    client: KernletClient, agent: AgentProcess
) -> None:
    k = await client.create_kernel(IMAGE)
    subprocess.run(["docker", "rm", "-f", k["container_id"]], check=True, capture_output=True)

    async def terminated() -> dict[str, Any] | None:
        log = await client.events(k["id"])
        return log[-1] if log[-1]["type"] == "kernel_terminated" else None

    last = await wait_for(terminated, timeout=30)
    assert last["payload"]["exit_code"] == 137
    await wait_for(lambda: k["id"] not in agent.scratch_dirs())


async def test_oom_kill_is_reported(client: KernletClient, agent: AgentProcess) -> None:
    k = await client.create_kernel(IMAGE, mem=256 * 1024**2)
    task = asyncio.create_task(
        client.run(k["id"], "blocks = []\nwhile True: blocks.append(bytearray(8 * 1024 * 1024))")
    )

    async def terminated() -> dict[str, Any] | None:
        log = await client.events(k["id"])
        return log[-1] if log[-1]["type"] == "kernel_terminated" else None

    last = await wait_for(terminated, timeout=60)
    assert last["payload"]["reason"] == "oom-killed"
    with pytest.raises(Exception):  # noqa: B017 - the run ends with the kernel's error
        await asyncio.wait_for(task, 10)
    await wait_for(lambda: k["id"] not in agent.scratch_dirs())
