"""The R kernel image (``kernlet image build r``): query mode drives the IRkernel that the
image's kernelspec label names, through the same runtime as Python's.

Needs the image: ``kernlet image build r`` (or ``$KERNLET_TEST_R_IMAGE``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from integration.conftest import NATS_URL, AgentProcess
from kernlet.client import KernletClient
from kernlet.images import DEFAULT_R_TAG
from kernlet.notebook import notebook_outputs

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

R_IMAGE = os.environ.get("KERNLET_TEST_R_IMAGE", DEFAULT_R_TAG)
JUPYTER = {"output": "jupyter"}


@pytest.fixture(scope="module")
def agent(halfstack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    if subprocess.run(["docker", "image", "inspect", R_IMAGE], capture_output=True,
                      check=False).returncode != 0:
        pytest.fail(f"image {R_IMAGE} missing: run `kernlet image build r`")
    proc = AgentProcess(tmp_path_factory.mktemp("agent-r"), f"test-r-{uuid.uuid4().hex[:8]}")
    proc.config.write_text(proc.config.read_text().replace(
        "[container]\n", "[container]\nport-range = [32900, 32999]\n", 1))
    proc.start()
    yield proc
    proc.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def r_kernel(agent: AgentProcess) -> AsyncIterator[tuple[KernletClient, str]]:
    async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=120) as c:
        kid = str((await c.create_kernel(R_IMAGE, mem=512 * 1024 * 1024))["id"])
        try:
            yield c, kid
        finally:
            await c.destroy_kernel(kid)


async def run(c: KernletClient, kid: str, code: str, opts: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    got: list[tuple[str, Any]] = []
    res = await c.run(kid, code, opts=opts, on_output=lambda k, d: got.append((k, d)))
    return res, got


async def test_state_is_kept_between_runs(r_kernel: tuple[KernletClient, str]) -> None:
    c, kid = r_kernel
    res, _ = await run(c, kid, "x <- 41")
    assert res["exitCode"] == 0
    res, got = await run(c, kid, "x + 1", JUPYTER)
    assert res["exitCode"] == 0
    # IRkernel shows a value as display_data (text/plain, text/html, text/markdown, ...)
    results = [d for k, d in got if k in ("display_data", "execute_result")]
    assert results and results[0]["data"]["text/plain"] == "[1] 42"
    assert "text/html" in results[0]["data"]  # the whole bundle, not the richest only
    res, got = await run(c, kid, "cat('hello from R\\n')")
    assert got == [("stdout", "hello from R\n")]


async def test_error_is_an_error_output(r_kernel: tuple[KernletClient, str]) -> None:
    c, kid = r_kernel
    res, got = await run(c, kid, "stop('boom')", JUPYTER)
    assert res["exitCode"] == 1
    errors = [d for k, d in got if k == "error"]
    assert len(errors) == 1 and "boom" in errors[0]["evalue"]
    (outs,) = notebook_outputs([got])
    assert outs[-1]["output_type"] == "error"


async def test_base_r_plot_is_an_image(r_kernel: tuple[KernletClient, str]) -> None:
    c, kid = r_kernel
    res, got = await run(c, kid, "plot(1:10)", JUPYTER)
    assert res["exitCode"] == 0
    displays = [d for k, d in got if k == "display_data"]
    assert displays and "image/png" in displays[0]["data"]
    assert base64.b64decode(displays[0]["data"]["image/png"]).startswith(b"\x89PNG")
    res, got = await run(c, kid, "plot(1:10)")  # the console shape: one PNG media item
    media = [d for k, d in got if k == "media"]
    assert media and media[0]["type"] == "image/png"
    assert media[0]["data"].startswith("data:image/png;base64,")


async def test_interrupt_then_usable(r_kernel: tuple[KernletClient, str]) -> None:
    c, kid = r_kernel
    started = asyncio.Event()

    def seen(kind: str, data: Any) -> None:
        started.set()

    task = asyncio.ensure_future(c.run(kid, "cat('looping\\n'); while (TRUE) {}",
                                       on_output=seen))
    await asyncio.wait_for(started.wait(), 60)
    await c.interrupt(kid)
    res = await asyncio.wait_for(task, 60)
    assert res["status"] == "finished" and res["exitCode"] != 0
    res, got = await run(c, kid, "cat(x + 1, '\\n')")
    assert res["exitCode"] == 0 and "".join(d for _, d in got) == "42 \n"


async def test_completion(r_kernel: tuple[KernletClient, str]) -> None:
    c, kid = r_kernel
    done = await c.complete(kid, "prin")
    assert "print" in done["matches"]
    assert done["cursor_start"] == 0 and done["cursor_end"] == 4
