"""The dashboard in headless Chromium (Debian's chromium), driven over the DevTools protocol.

A live agent's dashboard is opened; kernels are created over NATS and destroyed over the
watcher; the page must show each kernel appear and change state without a reload (server-sent
events). A screenshot is saved as artifacts/dashboard.png; with KERNLET_UPDATE_SCREENSHOT=1 it
also replaces docs/img/dashboard.png (the README's picture).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from integration.conftest import IMAGE, NATS_URL
from integration.test_watcher import AUTH, WatchedAgent
from kernlet.client import KernletClient
from kernlet.errors import ImageNotFound

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
DOCS_SHOT = ROOT / "docs" / "img" / "dashboard.png"


class Page:
    """One Chromium tab over the DevTools protocol (one call at a time)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        my = self._next
        await self._ws.send_json({"id": my, "method": method, "params": params})
        async for msg in self._ws:
            data = json.loads(msg.data)
            if data.get("id") != my:
                continue  # an event of the page
            if "error" in data:
                raise RuntimeError(f"{method}: {data['error']}")
            result: dict[str, Any] = data.get("result", {})
            return result
        raise RuntimeError("DevTools connection closed")

    async def js(self, expression: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def until(self, expression: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        while time.monotonic() < deadline:
            value = await self.js(guarded)  # the page may still be loading
            if value:
                return value
            await asyncio.sleep(0.05)
        text = await self.js("document.body.innerText")
        raise AssertionError(f"page never satisfied {expression!r}; it shows:\n{text[:2000]}")

    async def screenshot(self, path: Path) -> bytes:
        shot = await self.call("Page.captureScreenshot", format="png")
        data = base64.b64decode(shot["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium missing: apt-get install -y chromium (Debian's package)")
    profile = Path(tempfile.mkdtemp(prefix="kernlet-chromium-"))
    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,800",
         "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/json/list") as r:
                targets = await r.json()
            target = next(t for t in targets if t["type"] == "page")
            async with s.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                p = Page(ws)
                await p.call("Page.enable")
                await p.call("Emulation.setDeviceMetricsOverride", width=1280, height=800,
                             deviceScaleFactor=1, mobile=False)
                yield p
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


BURN = """
import threading, time
held = bytearray(64 * 1024 * 1024)
def burn():
    t = time.time()
    while time.time() - t < 12:
        pass
threading.Thread(target=burn, daemon=True).start()
print('burning')
"""


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

            png = await page.screenshot(ARTIFACTS / "dashboard.png")
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
            if os.environ.get("KERNLET_UPDATE_SCREENSHOT") == "1":
                DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
                DOCS_SHOT.write_bytes(png)
    finally:
        agent.cleanup()
