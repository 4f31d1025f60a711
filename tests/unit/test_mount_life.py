"""The mounts hook in a kernel's life (FakeRuntime, MemoryEventLog, real bind mounts): the
container binds the pinned points; a restart keeps them; a destroy during the hook, a crash
after each event, a refusal inside the hook all end with no pin, no staging point, no config
dir, no slot held."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from life_rig import IMAGE, Rig

from kernlet.drivers import storage
from kernlet.errors import InvalidMount
from kernlet.protocol import CreateKernels, DestroyKernel, RestartKernel

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
ENDED = ["kernel_terminating", "kernel_terminated"]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    (tmp_path / "vf" / "alice" / "data").mkdir(parents=True)
    r = Rig(tmp_path, roots={"vf": str(tmp_path / "vf")})
    yield r
    r.close()
    storage.unpin(r.cfg.agent.var_dir, "k1")  # whatever happened, no mount outlives the test


def create(mounts: list[dict[str, Any]]) -> CreateKernels:
    return CreateKernels.model_validate({"session_id": "s1", "kernel_ids": ["k1"],
                                         "configs": [{"image": IMAGE, "mounts": mounts}]})


MOUNTS = [{"source": "vf:alice/data", "target": "/home/work/data", "mode": "rw"},
          {"source": "vf:alice", "target": "/home/work/all", "mode": "ro"}]


def pins(rig: Rig) -> list[str]:
    return storage._mounts_under(storage.staging_dir(rig.cfg.agent.var_dir, "k1"))


def assert_nothing_held(rig: Rig) -> None:
    assert rig.containers("k1") == []
    assert rig.dirs("k1") == []  # scratch, ipc, config dir, staging dir
    assert pins(rig) == []
    rig.wait(lambda: all(float(v) == 0 for v in rig.slots_used().values()))


def test_the_container_binds_the_pins_and_a_restart_keeps_them(rig: Rig) -> None:
    answer = rig.call(create(MOUNTS))["kernels"][0]
    assert answer["ok"], answer
    base = storage.staging_dir(rig.cfg.agent.var_dir, "k1")
    want = [(str(base / "0"), "/home/work/data", False), (str(base / "1"), "/home/work/all", True)]
    (cid,) = rig.containers("k1")
    assert [m for m in rig.docker.containers[cid].spec.mounts if m[1].startswith("/home/work/")
            ] == want
    assert sorted(pins(rig)) == [str(base / "0"), str(base / "1")]
    rig.call(RestartKernel(kernel_id="k1"))
    (cid2,) = rig.containers("k1")
    assert cid2 != cid and [m for m in rig.docker.containers[cid2].spec.mounts
                            if m[1].startswith("/home/work/")] == want
    assert len(pins(rig)) == 2
    rig.call(DestroyKernel(kernel_id="k1"))
    assert_nothing_held(rig)
    assert (rig.tmp / "vf" / "alice" / "data").is_dir()  # the data is not the kernel's


@pytest.mark.parametrize("event", ["kernel_preparing", "kernel_creating", "container_created",
                                   "kernel_started"])
def test_crash_after_each_event_leaves_no_pin(rig: Rig, event: str) -> None:
    rig.crash_after(event)
    rig.submit(create(MOUNTS))
    store = rig.restart_agent()
    if event == "kernel_started":
        rig.call(DestroyKernel(kernel_id="k1"))
    rig.wait(lambda: rig.events("k1", store)[-1:] == ["kernel_terminated"])
    assert_nothing_held(rig)


def test_destroy_while_pinning_leaves_no_pin(rig: Rig, monkeypatch: Any) -> None:
    entered, held = threading.Event(), threading.Event()
    real = storage.pin

    def slow(*args: Any) -> None:  # in the hook's worker thread
        entered.set()
        held.wait(10)
        real(*args)

    monkeypatch.setattr(storage, "pin", slow)
    created = rig.submit(create(MOUNTS))
    rig.wait(entered.is_set)
    destroyed = rig.submit(DestroyKernel(kernel_id="k1"))
    rig.wait(lambda: "kernel_terminating" in rig.events("k1"))
    held.set()
    destroyed.result(10)
    assert created.result(10)["kernels"][0]["ok"] is False
    assert rig.events("k1")[-2:] == ENDED
    assert_nothing_held(rig)


def test_a_source_swapped_after_the_command_is_refused_by_the_hook(rig: Rig,
                                                                   monkeypatch: Any) -> None:
    data = rig.tmp / "vf" / "alice" / "data"
    real = storage.check_sources

    def check_then_swap(*args: Any) -> None:
        real(*args)
        data.rmdir()
        data.symlink_to("/etc")

    monkeypatch.setattr(storage, "check_sources", check_then_swap)
    answer = rig.call(create(MOUNTS[:1]))["kernels"][0]
    assert answer["ok"] is False and answer["error"]["type"] == InvalidMount.__name__
    assert "mounts[0].source: vf:alice/data is a symlink" in answer["error"]["message"]
    assert rig.events("k1")[-1] == "kernel_terminated"
    assert_nothing_held(rig)
