"""WorkDir: confinement by construction (fd walk, no check-then-use), without Docker.

The race test is the one the security issue describes, in-process: a thread swaps a directory
under the work dir for a symlink to a directory outside it, 10,000 times, while uploads,
downloads and listings go through that directory. Nothing may be read or written outside.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest

from kernlet.drivers.files import WorkDir, split
from kernlet.errors import InvalidRequest


@pytest.fixture
def work(tmp_path: Path) -> WorkDir:
    (tmp_path / "work").mkdir()
    return WorkDir(tmp_path / "work", os.getuid(), os.getgid(), max_file=1000)


def test_split_folds_and_refuses_climbing() -> None:
    assert split("a/./b/../c") == ["a", "c"]
    assert split("/home/work/x/y") == ["x", "y"]
    assert split("/home/work") == split("") == split(".") == []
    for bad in ("../x", "a/../../x", "/etc/passwd", "/home/workx/a", "/home/work/../etc"):
        with pytest.raises(InvalidRequest, match="outside /home/work"):
            split(bad)
    with pytest.raises(InvalidRequest, match="NUL"):
        split("a\x00b")


async def test_round_trip_makes_parents(work: WorkDir) -> None:
    res = await work.upload("a/b/c.txt", b"hello")
    assert res == {"path": "a/b/c.txt", "size": 5}
    assert (await work.upload("a/b/c.txt", b"!", append=True))["size"] == 6
    got = await work.download("/home/work/a/b/c.txt", 1, 100)
    assert got == {"data": b"ello!", "offset": 1, "size": 6, "eof": True}
    listing = await work.list("a/b")
    assert listing["path"] == "/home/work/a/b"
    assert [(f["name"], f["type"], f["size"]) for f in listing["files"]] == [("c.txt", "file", 6)]
    assert (await work.upload("a/b/c.txt", b"new"))["size"] == 3  # truncates


async def test_size_limit_counts_what_is_there(work: WorkDir) -> None:
    await work.upload("f", b"x" * 900)
    with pytest.raises(InvalidRequest, match="upload limit"):
        await work.upload("f", b"x" * 200, append=True)
    with pytest.raises(InvalidRequest, match="upload limit"):
        await work.upload("g", b"x" * 1001)
    assert (work.root / "f").stat().st_size == 900


async def test_links_fifos_and_dirs_refused(work: WorkDir, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("canary")
    (work.root / "esc").symlink_to(outside)
    (work.root / "lnk").symlink_to(outside / "secret")
    os.mkfifo(work.root / "fifo")
    (work.root / "d").mkdir()
    for call in (work.download("esc/secret", 0, 10), work.upload("esc/new", b"x"),
                 work.list("esc"), work.download("lnk", 0, 10), work.upload("lnk", b"x")):
        with pytest.raises(InvalidRequest, match="symlink"):
            await call
    for call in (work.download("fifo", 0, 1), work.upload("fifo", b"x")):
        with pytest.raises(InvalidRequest):
            await asyncio.wait_for(call, 5)
    with pytest.raises(InvalidRequest, match="directory"):
        await work.upload("d", b"x")
    with pytest.raises(InvalidRequest, match="directory"):
        await work.download("d", 0, 1)
    with pytest.raises(InvalidRequest, match="no such"):
        await work.download("nope/x", 0, 1)
    with pytest.raises(InvalidRequest, match="work dir itself"):
        await work.upload("/home/work", b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "canary"


def test_swap_race_never_escapes(work: WorkDir, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "f").write_text("canary")
    (outside / "f").write_text("canary")
    swap, real, link = work.root / "d", work.root / "d.real", work.root / "d.link"
    (real / "sub").mkdir(parents=True)
    link.symlink_to(outside)
    stop = threading.Event()
    swaps = 0

    def place(src: Path) -> None:
        while True:
            try:
                src.rename(swap)
                return
            except OSError:  # the agent made d while it was absent: take it away
                shutil.rmtree(swap, ignore_errors=True)

    def swapper() -> None:  # d: directory, symlink to outside, directory, ...
        nonlocal swaps
        while swaps < 10_000 and not stop.is_set():
            place(real)
            swap.rename(real)
            place(link)
            swap.rename(link)
            swaps += 2

    calls = (lambda: work.upload("d/sub/f", b"agent"), lambda: work.upload("d/new/x", b"agent"),
             lambda: work.download("d/sub/f", 0, 100), lambda: work.download("d/f", 0, 100),
             lambda: work.list("d"), lambda: work.list("d/sub"))

    async def hammer() -> tuple[int, int]:
        ok = refused = 0
        while not stop.is_set():
            for call in calls:
                try:
                    res = await call()
                except InvalidRequest:
                    refused += 1
                    continue
                ok += 1
                assert res.get("data") != b"canary"
                seen = {(f["name"], f["size"]) for f in res.get("files", [])}
                assert ("f", 6) not in seen  # outside/f or outside/sub/f listed
        return ok, refused

    thread = threading.Thread(target=swapper)

    async def main() -> tuple[int, int]:
        task = asyncio.ensure_future(hammer())
        thread.start()
        try:
            await asyncio.to_thread(thread.join, 120)
        finally:
            stop.set()
        return await task

    ok, refused = asyncio.run(main())
    assert swaps >= 10_000
    assert ok > 0 and refused > 0  # both sides of the race were hit
    assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) == ["f", "sub", "sub/f"]
    assert (outside / "f").read_text() == (outside / "sub" / "f").read_text() == "canary"
