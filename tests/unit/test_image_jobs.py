"""commit_kernel, get_commit_status and purge_images through the agent actor, on the rig's
fake runtime and memory log: the commit's events and status, one commit per kernel at a time,
a commit cut short by a crash reported failed after the restart, purge's refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from life_rig import IMAGE, Rig

from kernlet.errors import InvalidRequest, KernelNotFound
from kernlet.protocol import CommitKernel, CreateKernels, GetCommitStatus, PurgeImages


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def _create(rig: Rig, kernel_id: str) -> None:
    res = rig.call(CreateKernels.model_validate({
        "session_id": "s1", "kernel_ids": [kernel_id],
        "configs": [{"image": IMAGE, "cpu": 0.5}]}))
    assert res["kernels"][0]["ok"], res


def test_a_commit_is_recorded_and_its_image_is_a_kernel_image(rig: Rig) -> None:
    _create(rig, "k1")
    started = rig.call(CommitKernel(kernel_id="k1", image="team/env", tag="1"))
    assert started["status"] == "running" and started["image"] == "team/env:1"
    rig.wait(lambda: "image_commit_finished" in rig.events("_agent"))
    done = rig.call(GetCommitStatus(commit_id=started["commit_id"]))
    assert done["status"] == "done" and done["image_id"]
    assert rig.call(GetCommitStatus(kernel_id="k1")) == done
    labels = rig.on_loop(lambda: rig.docker._images["team/env:1"].labels)
    assert labels["ai.kernlet.kernelspec"] == "1"
    assert labels["ai.kernlet.committed-from"] == "k1"
    _create(rig, "k2")  # a create can use it at once (it is a kernel image)


def test_one_commit_per_kernel_at_a_time(rig: Rig) -> None:
    _create(rig, "k1")
    gate = rig.docker.block("commit")
    first = rig.call(CommitKernel(kernel_id="k1", image="team/env"))
    with pytest.raises(InvalidRequest, match="being committed"):
        rig.call(CommitKernel(kernel_id="k1", image="team/env", tag="2"))
    rig.on_loop(gate.release)
    rig.wait(lambda: rig.call(GetCommitStatus(commit_id=first["commit_id"]))["status"]
             == "done")
    with pytest.raises(KernelNotFound):
        rig.call(CommitKernel(kernel_id="nobody", image="team/env"))


def test_a_commit_cut_short_by_a_crash_is_failed_after_the_restart(rig: Rig) -> None:
    _create(rig, "k1")
    rig.docker.block("commit")  # Docker is still committing when the agent dies
    rig.crash_after("image_commit_started")
    started = rig.call(CommitKernel(kernel_id="k1", image="team/env"))
    store = rig.restart_agent()
    rig.wait(lambda: "image_commit_finished" in rig.events("_agent", store))
    status = rig.call(GetCommitStatus(commit_id=started["commit_id"]))
    assert status["status"] == "failed" and "restarted" in status["error"]
    assert status["error_type"] == "AgentTimeout"
    with pytest.raises(InvalidRequest, match="commit_id"):
        rig.call(GetCommitStatus(commit_id="0" * 32))


def test_purge_refuses_what_a_live_kernel_runs(rig: Rig) -> None:
    _create(rig, "k1")
    for force in (False, True):
        res = rig.call(PurgeImages(images=[IMAGE, "team/none:1"], force=force))
        assert res["removed"] == []
        assert res["refused"][IMAGE]["type"] == "ImageInUse"
        assert res["refused"]["team/none:1"]["type"] == "ImageNotFound"
    assert "images_purged" in rig.events("_agent")
