"""The file-escape race, for real: code in a kernel swaps a directory for a symlink to a host
directory while the manager side uploads, downloads and lists under it.

The swapper runs in a thread inside the kernel, 10,000 swaps (about 1 ms apart), and stops
by itself. Canary files on the host, outside the work dir, must be neither read nor written,
and no listing may show them.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from integration.conftest import IMAGE, AgentProcess
from kernlet.client import KernletClient
from kernlet.errors import InvalidRequest

pytestmark = pytest.mark.integration

SWAPPER = """
import os, shutil, threading, time
def _swap(outside, n=10_000):
    real, link, d = 'd.real', 'd.link', 'd'
    os.makedirs(real + '/sub', exist_ok=True)
    os.symlink(outside, link)
    def place(src):
        while True:
            try:
                os.rename(src, d)
                return
            except OSError:  # the agent made d while it was absent
                shutil.rmtree(d, ignore_errors=True)
    for i in range(0, n, 2):
        place(real); time.sleep(0.001); os.rename(d, real)
        place(link); time.sleep(0.001); os.rename(d, link)
    open('swaps-done', 'w').write(str(n))
threading.Thread(target=_swap, args=(%r,), daemon=True).start()
"""


async def test_symlink_swapper_in_a_kernel_never_escapes(
    client: KernletClient, agent: AgentProcess, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    for canary in (outside / "f", outside / "sub" / "f"):
        canary.write_text("canary")
    k = await client.create_kernel(IMAGE, mem=256 * 1024**2)
    kid = k["id"]
    work = agent.var_dir / "scratch" / kid / "work"
    try:
        res = await client.execute(kid, SWAPPER % str(outside))
        assert res["status"] == "finished", res
        calls = (lambda: client.upload(kid, "d/sub/f", b"agent"),
                 lambda: client.upload(kid, "d/new/x", b"agent"),
                 lambda: client.download(kid, "d/sub/f"),
                 lambda: client.download(kid, "d/f"),
                 lambda: client.list_files(kid, "d"),
                 lambda: client.list_files(kid, "d/sub"))
        ok = refused = 0
        async with asyncio.timeout(180):
            while not (work / "swaps-done").exists():
                for call in calls:
                    try:
                        got = await call()
                    except InvalidRequest:
                        refused += 1
                        continue
                    ok += 1
                    assert got != b"canary"
                    if isinstance(got, dict):
                        assert ("f", 6) not in {(f["name"], f["size"]) for f in got.get("files", [])}
        assert (work / "swaps-done").read_text() == "10000"
        print(f"swap race: {ok} operations went through, {refused} refused")
        assert ok > 0 and refused > 0, (ok, refused)  # both sides of the race were hit
        found = sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))
        assert found == ["f", "sub", "sub/f"]
        assert {p.read_text() for p in (outside / "f", outside / "sub" / "f")} == {"canary"}
        assert all(p.stat().st_uid == os.getuid() for p in outside.rglob("*"))
    finally:
        await client.destroy_kernel(kid)
