"""Storage mounts (kernlet.drivers.storage): the lexical checks, the walk from the root's fd,
the pin that makes Docker bind the checked directory whatever its path becomes, the undo;
the CLI's --mount syntax; the thread hints and the facts file of the container spec."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from kernlet.actors import steps
from kernlet.actors.hooks.facts import facts
from kernlet.cli.kernel import parse_mount
from kernlet.config import AgentConfig
from kernlet.drivers import storage
from kernlet.errors import InvalidMount, InvalidRequest
from kernlet.events import KernelState, State

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    vf = tmp_path / "vf"
    (vf / "alice" / "data").mkdir(parents=True)
    (vf / "alice" / "file.txt").write_text("x")
    (vf / "alice" / "out").symlink_to(tmp_path)            # leads out of the root
    (vf / "alice" / "in").symlink_to(vf / "alice" / "data")  # stays inside: refused too
    return {"vf": vf}


def m(source: str, target: str = "/home/work/data", mode: str = "rw") -> dict[str, Any]:
    return {"source": source, "target": target, "mode": mode}


def test_a_good_mount_is_planned(roots: dict[str, Path]) -> None:
    (p,) = storage.plan_mounts(roots, [m("vf:alice/./data/", "/home/work/x/../data", "ro")])
    assert (p.root, p.parts, p.target, p.read_only) == ("vf", ("alice", "data"),
                                                        "/home/work/data", True)
    assert storage.plan_mounts(roots, [m("vf:")])[0].parts == ()


@pytest.mark.parametrize(("mount", "field", "words"), [
    (m("alice/data"), "source", "is not 'root:path'"),
    (m(":alice"), "source", "is not 'root:path'"),
    (m("nope:alice"), "source", "unknown storage root 'nope' (this agent has: vf)"),
    (m("vf:/etc"), "source", "must be a relative path"),
    (m("vf:alice/../../etc"), "source", "may not contain '..'"),
    (m("vf:alice", "/home/work"), "target", "not /home/work itself"),
    (m("vf:alice", "/home/work/"), "target", "not /home/work itself"),
    (m("vf:alice", "/etc"), "target", "must be under /home/work"),
    (m("vf:alice", "/home/work/../../usr"), "target", "must be under /home/work"),
    (m("vf:alice", "/home/workshop"), "target", "must be under /home/work"),
    (m("vf:alice", "home/work/x"), "target", "must be an absolute path"),
    (m("vf:alice", "/home/work/a:b"), "target", "without ':'"),
])
def test_each_bad_mount_is_refused_naming_it(roots: dict[str, Path], mount: dict[str, Any],
                                             field: str, words: str) -> None:
    with pytest.raises(InvalidMount) as err:
        storage.plan_mounts(roots, [m("vf:alice", "/home/work/ok"), mount], "configs[2].mounts")
    assert err.value.message.startswith(f"configs[2].mounts[1].{field}: ")
    assert words in err.value.message
    assert isinstance(err.value, InvalidRequest)


def test_duplicate_targets_are_refused(roots: dict[str, Path]) -> None:
    with pytest.raises(InvalidMount, match=r"mounts\[1\]\.target: '/home/work/d' is also the "
                                           r"target of mount 0"):
        storage.plan_mounts(roots, [m("vf:alice", "/home/work/d"),
                                    m("vf:alice/data", "/home/work/x/../d/")])


@pytest.mark.parametrize(("source", "words"), [
    ("vf:alice/missing", "missing source: vf:alice/missing does not exist"),
    ("vf:alice/missing/deeper", "missing source: vf:alice/missing does not exist"),
    ("vf:alice/out", "vf:alice/out is a symlink or not a directory"),
    ("vf:alice/out/etc", "vf:alice/out is a symlink or not a directory"),
    ("vf:alice/in", "vf:alice/in is a symlink or not a directory"),
    ("vf:alice/file.txt", "vf:alice/file.txt is a symlink or not a directory"),
])
def test_the_walk_refuses_what_is_missing_or_leads_out(roots: dict[str, Path], source: str,
                                                       words: str) -> None:
    plans = storage.plan_mounts(roots, [m(source)])
    with pytest.raises(InvalidMount, match=r"^mounts\[0\]\.source: ") as err:
        storage.check_sources(roots, plans)
    assert words in err.value.message


def test_a_root_that_is_not_there_is_named(tmp_path: Path) -> None:
    roots = {"gone": tmp_path / "nowhere"}
    with pytest.raises(InvalidMount, match=r"storage root 'gone' .* cannot be opened"):
        storage.check_sources(roots, storage.plan_mounts(roots, [m("gone:x")]))


def test_binds_point_at_the_staging_points(tmp_path: Path) -> None:
    got = storage.binds(tmp_path, "k1", [m("vf:a", "/home/work/a/"), m("vf:b", "/home/work/b",
                                                                       "ro")])
    assert got == ((str(tmp_path / "mounts/k1/0"), "/home/work/a", False),
                   (str(tmp_path / "mounts/k1/1"), "/home/work/b", True))


@pytest.fixture
def var(tmp_path: Path) -> Iterator[Path]:
    v = tmp_path / "var"
    yield v
    storage.unpin(v, "k1")  # never leave a mount behind, whatever the test did


@root_only
def test_the_pin_binds_the_checked_directory_even_if_its_path_is_swapped(
        roots: dict[str, Path], var: Path, tmp_path: Path) -> None:
    data = roots["vf"] / "alice" / "data"
    (data / "mine.txt").write_text("mine")
    plans = storage.plan_mounts(roots, [m("vf:alice/data"), m("vf:alice", "/home/work/a")])
    storage.pin(var, "k1", roots, plans)
    storage.pin(var, "k1", roots, plans)  # a retry: nothing doubled
    point = storage.staging_dir(var, "k1") / "0"
    assert sorted(storage._mounts_under(storage.staging_dir(var, "k1"))) == [
        str(point), str(point.parent / "1")]
    # a kernel swaps the checked directory for a symlink out of the root
    data.rename(roots["vf"] / "alice" / "moved")
    data.symlink_to(tmp_path)
    assert (point / "mine.txt").read_text() == "mine"
    assert not (point / "vf").exists()
    (point / "new.txt").write_text("kept")  # writes go to the source
    storage.unpin(var, "k1")
    assert (roots["vf"] / "alice" / "moved" / "new.txt").read_text() == "kept"
    assert not storage.staging_dir(var, "k1").exists()
    assert storage._mounts_under(var) == []
    storage.unpin(var, "k1")  # again: nothing to do


def test_unpin_of_a_kernel_that_never_pinned_is_a_no_op(var: Path) -> None:
    storage.unpin(var, "k1")
    assert not var.exists()


def test_unescape_reads_mountinfo_escapes() -> None:
    assert storage._unescape("/var/a\\040b\\134c") == "/var/a b\\c"


@pytest.mark.parametrize(("text", "want"), [
    ("vf:alice/data:/home/work/data", m("vf:alice/data")),
    ("vf:alice/data:/home/work/data:ro", m("vf:alice/data", mode="ro")),
    ("vf:a:b/c:/home/work/c:rw", m("vf:a:b/c", "/home/work/c")),
    ("vf::/home/work/all", m("vf:", "/home/work/all")),
])
def test_cli_mount_syntax(text: str, want: dict[str, Any]) -> None:
    assert parse_mount(text) == want


@pytest.mark.parametrize("text", ["/home/work/data", "alice:/home/work/data:ro"])
def test_cli_mount_syntax_refused(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_mount(text)


def _state(cpu: str, mounts: list[dict[str, Any]] | None = None) -> KernelState:
    return KernelState(kernel_id="k1", state=State.CREATING, seq=3, session_id="s1",
                       image="img", config={"mounts": mounts or [], "environ": {}},
                       slots={"cpu": cpu, "mem": str(256 * 1024**2)}, cpuset=(0, 1))


@pytest.mark.parametrize(("cpu", "threads"), [("0.25", "1"), ("1", "1"), ("1.5", "2"),
                                              ("4", "4")])
def test_the_spec_has_thread_hints_binds_and_the_config_dir(tmp_path: Path, cpu: str,
                                                            threads: str) -> None:
    cfg = AgentConfig.model_validate({"agent": {"var-dir": str(tmp_path)}})
    state = _state(cpu, [m("vf:a", "/home/work/a", "ro")])
    spec = steps.container_spec(cfg, state, steps.kernel_dirs(cfg, "k1"), {})
    assert {k: spec.env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NPROC")} == {
        "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "NPROC": threads}
    assert (str(tmp_path / "config/k1"), "/home/config", True) in spec.mounts
    assert (str(tmp_path / "mounts/k1/0"), "/home/work/a", True) in spec.mounts


def test_the_users_environ_wins_over_the_thread_hints(tmp_path: Path) -> None:
    cfg = AgentConfig.model_validate({"agent": {"var-dir": str(tmp_path)}})
    state = _state("2")
    state.config["environ"] = {"OMP_NUM_THREADS": "7"}
    spec = steps.container_spec(cfg, state, steps.kernel_dirs(cfg, "k1"), {})
    assert spec.env["OMP_NUM_THREADS"] == "7"
    assert spec.env["NPROC"] == "2"


def test_the_facts_file_says_what_the_log_says() -> None:
    got = facts(_state("1.5", [m("vf:a", "/home/work/a", "ro")]))
    assert json.loads(json.dumps(got)) == {
        "kernel_id": "k1", "session_id": "s1", "image": "img",
        "slots": {"cpu": "1.5", "mem": str(256 * 1024**2)}, "cpuset": [0, 1], "devices": {},
        "mounts": [m("vf:a", "/home/work/a", "ro")], "config_dir": "/home/config"}


def test_storage_roots_must_be_absolute_and_named_plainly() -> None:
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="not an absolute path"):
        AgentConfig.model_validate({"storage": {"roots": {"vf": "rel/path"}}})
    with pytest.raises(ValidationError, match="root name"):
        AgentConfig.model_validate({"storage": {"roots": {"a:b": "/x"}}})


def test_a_bind_the_kernel_refuses_fails_the_create_and_says_why(
        roots: dict[str, Path], var: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes
    import errno

    from kernlet.errors import DriverError

    class NoMount:
        def mount(self, *args: Any) -> int:
            ctypes.set_errno(errno.EPERM)
            return -1

    monkeypatch.setattr(storage, "_libc", NoMount)
    plans = storage.plan_mounts(roots, [m("vf:alice/data")])
    with pytest.raises(DriverError, match=r"mounts\[0\]\.source: cannot bind vf:alice/data: "
                                          r"Operation not permitted \(the agent needs root"):
        storage.pin(var, "k1", roots, plans)
