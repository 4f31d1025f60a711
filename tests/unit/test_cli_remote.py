"""The CLI's shared parts without an agent: exit codes, KID:PATH parsing, the piped table,
and an unreachable NATS answered with one line and exit 69."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from kernlet.cli import main
from kernlet.cli._out import iso
from kernlet.cli._remote import _endpoints, exit_code_for
from kernlet.cli.kernel_exec import exit_status
from kernlet.cli.kernel_files import split_remote
from kernlet.errors import (
    AgentTimeout,
    AgentUnavailable,
    CreationFailed,
    DockerError,
    InternalError,
    InvalidRequest,
    KernelNotFound,
    KernletError,
    RuntimeUnavailable,
)


@pytest.mark.parametrize(("exc", "code"), [
    (InvalidRequest("x"), 65), (KernelNotFound("x"), 66), (AgentUnavailable("x"), 69),
    (InternalError("x"), 70), (KernletError("x"), 70), (CreationFailed("x"), 73),
    (DockerError("x"), 74), (RuntimeUnavailable("x"), 74), (AgentTimeout("x"), 75),
])
def test_each_error_has_its_documented_exit_code(exc: KernletError, code: int) -> None:
    assert exit_code_for(exc) == code


def test_exec_exit_status() -> None:
    assert exit_status({"status": "finished", "exitCode": 0}, False) == 0
    assert exit_status({"status": "finished", "exitCode": 1}, False) == 1
    assert exit_status({"status": "finished", "exitCode": 7}, False) == 7
    assert exit_status({"status": "exec-timeout", "exitCode": 1}, False) == 124
    assert exit_status({"status": "finished", "exitCode": 1}, True) == 130


def test_split_remote() -> None:
    assert split_remote("abc123:data/x.csv") == ("abc123", "data/x.csv")
    assert split_remote("abc123:") == ("abc123", ".")
    assert split_remote("./a:b") is None
    assert split_remote("/tmp/a:b") is None
    assert split_remote("plain.txt") is None


def test_endpoints() -> None:
    assert _endpoints("nats://127.0.0.1:4222") == [("127.0.0.1", 4222)]
    assert _endpoints("nats://h1,nats://h2:5000") == [("h1", 4222), ("h2", 5000)]
    assert _endpoints("ws://h:80") == []


def test_iso_times() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000+00:00"
    assert iso(None) == ""


def test_unreachable_nats_is_one_line_and_exit_69(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[agent]\nid = "a1"\nvar-dir = "{tmp_path}"\n')
    res = CliRunner().invoke(main, ["kernel", "--config", str(cfg), "--nats",
                                    f"nats://127.0.0.1:{port}", "ls"])
    assert res.exit_code == 69
    lines = res.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: AgentUnavailable: cannot reach NATS")
