"""Headless Chromium (Debian's package) driven over the DevTools protocol, for page tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from integration.servers import stop_process

__all__ = ["Page", "chromium_page"]


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
        """Wait until ``expression`` is truthy in the page; its value."""
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


@contextlib.asynccontextmanager
async def chromium_page(width: int = 1280, height: int = 800) -> AsyncIterator[Page]:
    """A fresh headless Chromium with one blank tab; fails the test if there is none."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium missing: apt-get install -y chromium (Debian's package)")
    profile = Path(tempfile.mkdtemp(prefix="kernlet-chromium-"))
    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", f"--window-size={width},{height}",
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
                page = Page(ws)
                await page.call("Page.enable")
                await page.call("Emulation.setDeviceMetricsOverride", width=width,
                                height=height, deviceScaleFactor=1, mobile=False)
                yield page
    finally:
        stop_process(proc)
        shutil.rmtree(profile, ignore_errors=True)
