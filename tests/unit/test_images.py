"""The image pipeline's logic: names, credentials, the commit's config, the job folds, the
purge plan, the inventory and the progress throttle (the real Docker and registry are in
tests/integration/test_images.py)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kernlet.actors.image_commands import purge_plan
from kernlet.actors.image_jobs import (
    RESTARTED,
    Throttle,
    commit_statuses,
    interrupted_jobs,
    push_target,
)
from kernlet.actors.inventory import ImageInventory, changes
from kernlet.cli._remote import exit_code_for
from kernlet.client_images import _raise_failure
from kernlet.config import AgentConfig, apply_cluster
from kernlet.config_registries import RegistrySection, registry_auth
from kernlet.drivers.container_runtime import PullProgress
from kernlet.drivers.docker_errors import registry_error
from kernlet.drivers.docker_images import commit_config, split_ref
from kernlet.drivers.fake_runtime import FakeRuntime
from kernlet.drivers.image_ops import ImageRecord, RegistryAuth, registry_of
from kernlet.errors import (
    DockerError,
    ImageInUse,
    ImageNotFound,
    InvalidRequest,
    RegistryAuthFailed,
)
from kernlet.events import (
    EventBody,
    ImageCommitFinished,
    ImageCommitStarted,
    ImageInventoryChanged,
    ImagePushed,
    ImagePushProgress,
    new_envelope,
)


@pytest.mark.parametrize(("name", "registry"), [
    ("127.0.0.1:5000/a/b:1", "127.0.0.1:5000"), ("localhost/x", "localhost"),
    ("r.example.com/x", "r.example.com"), ("kernlet/python:3.11", ""), ("python", ""),
])
def test_registry_of(name: str, registry: str) -> None:
    assert registry_of(name) == registry


@pytest.mark.parametrize(("ref", "parts"), [
    ("127.0.0.1:5000/a/b:1", ("127.0.0.1:5000/a/b", "1")),
    ("127.0.0.1:5000/a/b", ("127.0.0.1:5000/a/b", "latest")), ("x:y", ("x", "y")),
])
def test_split_ref(ref: str, parts: tuple[str, str]) -> None:
    assert split_ref(ref) == parts


def test_push_target() -> None:
    assert push_target("127.0.0.1:5000/a:1", "") == "127.0.0.1:5000/a:1"
    assert push_target("127.0.0.1:5000/a:1", "127.0.0.1:5000") == "127.0.0.1:5000/a:1"
    assert push_target("127.0.0.1:5000/a:1", "10.0.0.1:5001") == "10.0.0.1:5001/a:1"
    assert push_target("kernlet/mine:2", "127.0.0.1:5000") == "127.0.0.1:5000/kernlet/mine:2"
    with pytest.raises(InvalidRequest, match="registry"):
        push_target("kernlet/mine:2", "")


def test_credentials_never_show_in_repr_or_dumps() -> None:
    auth = RegistryAuth("r:5000", username="u", password="hunter2", identity_token="tok9")
    assert "hunter2" not in repr(auth) and "tok9" not in repr(auth)
    cfg = AgentConfig.model_validate(
        {"registries": {"r:5000": {"username": "u", "password": "hunter2"}}})
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.model_dump())
    assert registry_auth(cfg.registries, "r:5000/x:1") == RegistryAuth(
        "r:5000", username="u", password="hunter2")
    assert registry_auth(cfg.registries, "other:5000/x:1") is None
    assert registry_auth(cfg.registries, "kernlet/python:3.11") is None


def test_auth_headers() -> None:
    assert RegistryAuth("r", "u", "p").header() == {
        "username": "u", "password": "p", "serveraddress": "r"}
    assert RegistryAuth("r", identity_token="t").header() == {
        "identitytoken": "t", "serveraddress": "r"}


@pytest.mark.parametrize("table", [
    {},  # no username
    {"username": "u", "password": "p", "password-file": "/x"},
    {"token-file": "/t", "username": "u"},
])
def test_registry_tables_that_make_no_sense_are_refused(table: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RegistrySection.model_validate(table)


def test_password_and_token_files(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "tok").write_text("idtoken\n")
    regs = {
        "a:1": RegistrySection.model_validate({"username": "u", "password-file": tmp_path / "pw"}),
        "b:2": RegistrySection.model_validate({"token-file": tmp_path / "tok"}),
        "c:3": RegistrySection.model_validate({"username": "u",
                                               "password-file": tmp_path / "missing"}),
    }
    assert registry_auth(regs, "a:1/x") == RegistryAuth("a:1", "u", "s3cret")
    assert registry_auth(regs, "b:2/x") == RegistryAuth("b:2", identity_token="idtoken")
    with pytest.raises(OSError, match="missing"):
        registry_auth(regs, "c:3/x")


@pytest.mark.parametrize(("message", "cls"), [
    ("push x: unauthorized: authentication required", RegistryAuthFailed),
    ("pull x: Head https://r/v2/x/manifests/1: no basic auth credentials", RegistryAuthFailed),
    ("pull x: manifest unknown", DockerError),
])
def test_registry_errors_are_typed(message: str, cls: type[DockerError]) -> None:
    assert type(registry_error(message)) is cls


def test_commit_config_keeps_the_kernel_out_of_the_image() -> None:
    base = {"Env": ["PATH=/bin", "LANG=C.UTF-8"], "Cmd": ["/usr/bin/python3"],
            "WorkingDir": "/home/work", "Labels": {"ai.kernlet.kernelspec": "1"}}
    container = {"Env": ["PATH=/bin", "MY_TOKEN=abc", "KERNLET_KERNEL_ID=k1"],
                 "Labels": {"ai.kernlet.kernel-id": "k1", "ai.kernlet.kernelspec": "1"}}
    cfg = commit_config(base, container, {"ai.kernlet.committed-from": "k1"})
    assert cfg["Env"] == ["PATH=/bin", "LANG=C.UTF-8", "MY_TOKEN=", "KERNLET_KERNEL_ID="]
    assert cfg["Labels"] == {"ai.kernlet.kernelspec": "1", "ai.kernlet.committed-from": "k1",
                             "ai.kernlet.kernel-id": ""}
    assert cfg["Cmd"] == ["/usr/bin/python3"] and cfg["WorkingDir"] == "/home/work"


def _stream(*bodies: EventBody) -> list[Any]:
    return [new_envelope("_agent", i + 1, b) for i, b in enumerate(bodies)]


def test_jobs_cut_short_are_reported_failed_once() -> None:
    events = _stream(
        ImageCommitStarted(commit_id="c1", kernel_id="k1", image="a:1"),
        ImageCommitStarted(commit_id="c2", kernel_id="k2", image="b:1"),
        ImageCommitFinished(commit_id="c2", kernel_id="k2", image="b:1", ok=True,
                            image_id="sha256:b"),
        ImagePushProgress(image="r:1/a:1", status="started"),
        ImagePushProgress(image="r:1/b:1", status="started"),
        ImagePushProgress(image="r:1/b:1", status="Pushing", current=1, total=2),
        ImagePushed(image="r:1/b:1", ok=True, digest="sha256:d"),
    )
    statuses = commit_statuses(events)
    assert statuses["c1"].status == "running" and statuses["c2"].status == "done"
    failed = interrupted_jobs(events)
    assert failed == [
        ImageCommitFinished(commit_id="c1", kernel_id="k1", image="a:1", ok=False,
                            error=RESTARTED, error_type="AgentTimeout"),
        ImagePushed(image="r:1/a:1", ok=False, error=RESTARTED, error_type="AgentTimeout"),
    ]
    after = events + [new_envelope("_agent", len(events) + i + 1, b)
                      for i, b in enumerate(failed)]
    assert interrupted_jobs(after) == []
    assert commit_statuses(after)["c1"].status == "failed"


def test_purge_plan_never_removes_what_a_live_kernel_runs() -> None:
    ok, refused = purge_plan({"a:1": "sha256:a", "b:1": "sha256:b", "alias:1": "sha256:a",
                              "gone:1": None}, {"k1": "sha256:a"})
    assert ok == ["b:1"]
    assert isinstance(refused["a:1"], ImageInUse) and "k1" in refused["a:1"].message
    assert isinstance(refused["alias:1"], ImageInUse)  # the same image by another name
    assert isinstance(refused["gone:1"], ImageNotFound)


def _rec(id_: str, *tags: str) -> ImageRecord:
    return ImageRecord(id_, tags, (), 1, {})


def test_inventory_changes() -> None:
    before = [_rec("sha256:a", "a:1"), _rec("sha256:b", "b:1", "b:2")]
    after = [_rec("sha256:b", "b:1"), _rec("sha256:c")]
    assert changes(before, after) == (["sha256:c"], ["a:1", "b:2"])
    assert changes(after, after) == ([], [])


async def test_inventory_records_what_changed_behind_its_back() -> None:
    docker = FakeRuntime()
    docker.add_image("kernlet/python:3.11", {"ai.kernlet.kernelspec": "1"})
    docker.add_image("other:1", {})
    recorded: list[EventBody] = []

    async def record(body: EventBody) -> None:
        recorded.append(body)

    inventory = ImageInventory(docker, record)
    await inventory.rescan()
    assert recorded == []  # the first listing is the baseline
    assert [e["name"] for e in inventory.heartbeat()] == ["kernlet/python:3.11"]
    docker.add_image("mine:1", {"ai.kernlet.kernelspec": "1"})
    await docker.remove_image("kernlet/python:3.11")
    await inventory.rescan()
    assert recorded == [ImageInventoryChanged(added=("mine:1",),
                                              removed=("kernlet/python:3.11",))]
    entry = inventory.heartbeat()[0]
    assert set(entry) == {"name", "id", "digests", "size", "labels"}
    assert inventory.last_scan is not None


class _Ref:
    def __init__(self) -> None:
        self.told: list[Any] = []

    def tell(self, message: Any) -> None:
        self.told.append(message)


def test_progress_is_recorded_at_most_once_a_second() -> None:
    now = [0.0]
    ref = _Ref()
    throttle = Throttle(ref, lambda p: ImagePushProgress(image="x", status=p.status,  # type: ignore[arg-type]
                                                         current=p.current, total=p.total),
                        clock=lambda: now[0])
    for step in range(50):  # 5 s of progress every 0.1 s
        now[0] = step * 0.1
        throttle(PullProgress("Pushing", step, 50))
    assert 4 <= len(ref.told) <= 5
    times = [m.body.current / 10 for m in ref.told]
    assert all(b - a >= 0.99 for a, b in itertools.pairwise(times))


def test_cli_exit_codes_of_the_image_errors() -> None:
    assert exit_code_for(ImageInUse("x")) == 65
    assert exit_code_for(RegistryAuthFailed("x")) == 74  # a DriverError
    assert exit_code_for(ImageNotFound("x")) == 66


def test_a_failed_job_on_the_wire_becomes_its_typed_error() -> None:
    with pytest.raises(RegistryAuthFailed, match="unauthorized"):
        _raise_failure({"ok": False, "error": "push x: unauthorized",
                        "error_type": "RegistryAuthFailed"})
    with pytest.raises(DockerError):
        _raise_failure({"ok": False, "error": "old agent", "error_type": ""})
    _raise_failure({"ok": True})


def test_registries_are_local_only_and_survive_cluster_settings() -> None:
    cfg = AgentConfig.model_validate(
        {"registries": {"r:5000": {"username": "u", "password": "hunter2"}}})
    merged, refused = apply_cluster(cfg, {"registries/r:5000": "x", "agent/orphan-grace": "5"})
    assert refused == ["registries/r:5000"] and merged.agent.orphan_grace == 5
    assert merged.registries["r:5000"].password.get_secret_value() == "hunter2"
