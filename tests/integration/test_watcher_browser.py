"""The dashboard in headless Chromium (Debian's chromium), driven over the DevTools protocol.

A live agent's dashboard is opened; kernels are created over NATS and destroyed over the
watcher; the page must show each kernel appear and change state without a reload (server-sent
events). A screenshot is saved as artifacts/dashboard.png; with KERNLET_UPDATE_SCREENSHOT=1 it
also replaces docs/img/dashboard.png (the README's picture).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from integration.browser import Page, chromium_page
from integration.conftest import IMAGE, NATS_URL
from integration.test_watcher import AUTH, WatchedAgent
from kernlet.client import KernletClient
from kernlet.errors import ImageNotFound

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
DOCS_SHOT = ROOT / "docs" / "img" / "dashboard.png"


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with chromium_page(1280, 800) as p:
        yield p


# burns a core until told to stop (STOP_BURN): however slow the machine, it is still burning
# when the page is checked
BURN = """
import threading
held = bytearray(64 * 1024 * 1024)
stop_burning = threading.Event()
def burn():
    while not stop_burning.is_set():
        pass
threading.Thread(target=burn, daemon=True).start()
print('burning')
"""
STOP_BURN = "stop_burning.set()"


def row_state(kernel_id: str) -> str:
    return (f'(document.querySelector(\'tr[data-kernel="{kernel_id}"]\') || '
            f'{{dataset: {{}}}}).dataset.state || ""')


async def watch_states(page: Page, kernel_id: str, until: str, timeout: float = 60.0) -> list[str]:
    """The row's states as the page showed them, polled until it shows ``until``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = await page.js(row_state(kernel_id))
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if state == until:
            return seen
        await asyncio.sleep(0.03)
    raise AssertionError(f"{kernel_id} never showed {until}; seen {seen}")


async def test_dashboard_shows_kernels_appear_and_change_state(
    halfstack: None, tmp_path: Path, page: Page
) -> None:
    agent = WatchedAgent(tmp_path)
    agent.start()
    tag = uuid.uuid4().hex[:4]
    busy, brief, broken = f"py-main-{tag}", f"py-brief-{tag}", f"py-broken-{tag}"
    try:
        await page.call("Page.navigate", url=agent.url + "/")
        await page.until(f"document.getElementById('agent-id').textContent === "
                         f"{json.dumps(agent.agent_id)}")
        await page.until("document.getElementById('conn').textContent === 'live'")
        assert await page.js(row_state(busy)) == ""

        async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=90) as kc, \
                aiohttp.ClientSession() as http:
            create = asyncio.create_task(
                kc.create_kernel(IMAGE, kernel_id=busy, cpu=1, mem=512 * 1024**2))
            seen = await watch_states(page, busy, "running")
            await create
            assert seen[-1] == "running" and len(seen) >= 1
            assert set(seen) <= {"preparing", "creating", "running"}
            # a run that leaves a thread burning CPU for a while, and some memory held
            await kc.run(busy, BURN)

            await kc.create_kernel(IMAGE, kernel_id=brief, cpu=0.5)
            await watch_states(page, brief, "running", timeout=20)

            async def destroy() -> int:
                async with http.post(f"{agent.url}/kernels/{brief}/destroy", headers=AUTH) as r:
                    return r.status

            destroying = asyncio.create_task(destroy())  # answers once the kernel is gone
            seen = await watch_states(page, brief, "terminated", timeout=20)
            assert await destroying == 200
            assert seen[0] == "running" and seen[-1] == "terminated"
            with pytest.raises(ImageNotFound):
                await kc.create_kernel("kernlet/no-such-image:0", kernel_id=broken)
            await page.until(f"{row_state(broken)} === 'terminated'")

            # the per-kernel timeline: select the running kernel
            await page.js(f"document.querySelector('tr[data-kernel=\"{busy}\"]').click()")
            await page.until(f"document.getElementById('timeline').dataset.kernel === '{busy}'")
            await page.until("document.querySelectorAll('#tl-events li').length >= 6")
            types = await page.js(
                "[...document.querySelectorAll('#tl-events li')].map(li => li.dataset.type)")
            assert types[:4] == ["kernel_preparing", "kernel_creating", "container_created",
                                 "kernel_started"]
            assert "execution_finished" in types
            # node gauges and the kernel's usage, pushed by the status stream (every 2 s)
            await page.until(
                f"parseInt(document.querySelector('tr[data-kernel=\"{busy}\"] td.num')"
                f".textContent) >= 20", timeout=15)
            await page.until("document.getElementById('g-kernels').innerText.includes('1 running')")
            counts = await page.js("document.getElementById('state-counts').innerText")
            assert "2 terminated" in counts
            assert await page.js("document.getElementById('health').textContent") == "healthy"

            # the charts: node and selected kernel, the last minutes, a point every sample
            points = "parseInt(document.getElementById('{}').dataset.points)"
            await page.until(f"{points.format('c-kernel-cpu')} >= 3", timeout=20)
            for chart in ("c-node-cpu", "c-node-mem", "c-kernel-mem"):
                assert await page.js(points.format(chart)) >= 3, chart
            assert await page.js("document.getElementById('c-kernel-name').textContent") == busy
            drawn = await page.js(
                "document.querySelector('#c-kernel-cpu polyline').getAttribute('points')")
            assert len(drawn.split()) >= 3
            # the kernel was burning a core: its chart's peak says so (cores busy)
            async with http.get(f"{agent.url}/usage/history?kernel_id={busy}") as r:
                history = await r.json()
            assert max(p[1] for p in history["kernels"][busy]) >= 0.2
            assert max(p[2] for p in history["kernels"][busy]) >= 64 * 1024**2
            assert len(history["node"]) >= 3
            png = await page.screenshot(ARTIFACTS / "dashboard.png")
            await kc.run(busy, STOP_BURN)
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
            if os.environ.get("KERNLET_UPDATE_SCREENSHOT") == "1":
                DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
                DOCS_SHOT.write_bytes(png)
            # a page opened now shows the minutes before it (GET /usage/history), at once
            await page.call("Page.reload")
            await page.until(f"document.getElementById('agent-id').textContent === "
                             f"{json.dumps(agent.agent_id)}")
            await page.until("document.getElementById('conn').textContent === 'live'")
            assert await page.js(points.format("c-node-cpu")) >= len(history["node"])
            await page.js(f"document.querySelector('tr[data-kernel=\"{busy}\"]').click()")
            await page.until(f"{points.format('c-kernel-cpu')} >= "
                             f"{len(history['kernels'][busy])}", timeout=5)

    finally:
        agent.cleanup()
