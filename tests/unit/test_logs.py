"""kernlet.logs: ids from context (threads, tasks, actor steps), text and JSON formats; the
systemd pieces (sd_notify, the unit) and the module entry points."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernlet import __version__, logs
from kernlet.actors.base import LoopActor
from kernlet.actors.loop import LoopThread
from kernlet.cli.systemd import render
from kernlet.config import ConfigError, load_config
from kernlet.sdnotify import notify

ROOT = Path(__file__).resolve().parents[2]


class _Collect(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.addFilter(logs.ContextFilter())
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def json_lines() -> Iterator[list[str]]:
    handler = _Collect(logs.JsonFormatter())
    log = logging.getLogger("kernlet.test-logs")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        log.removeHandler(handler)


def _parsed(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


def test_json_records_carry_the_ids_bound_around_them(json_lines: list[str]) -> None:
    log = logging.getLogger("kernlet.test-logs")
    log.info("outside")
    with logs.bound(kernel_id="k1"):
        log.info("in k1")
        with logs.bound(run_id="r1"):
            log.warning("in a run of %s", "k1")
        log.info("explicit", extra={"kernel_id": "k2"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    out = _parsed(json_lines)
    assert "kernel_id" not in out[0] and out[0]["msg"] == "outside"
    assert out[1]["kernel_id"] == "k1" and "run_id" not in out[1]
    assert (out[2]["kernel_id"], out[2]["run_id"], out[2]["level"]) == ("k1", "r1", "warning")
    assert out[2]["msg"] == "in a run of k1"
    assert out[3]["kernel_id"] == "k2"  # an explicit extra wins over the context
    assert "ValueError: boom" in out[4]["exc"] and "kernel_id" not in out[4]
    assert {"ts", "level", "logger", "thread", "msg"} <= set(out[0])


def test_text_format_prefixes_the_ids() -> None:
    handler = _Collect(logs.TextFormatter())
    log = logging.getLogger("kernlet.test-logs-text")
    log.addHandler(handler)
    try:
        with logs.bound(kernel_id="k1", run_id="r1"):
            log.warning("hello")
        log.warning("bare")
    finally:
        log.removeHandler(handler)
    assert handler.lines[0].endswith("kernlet.test-logs-text: [kernel k1 run r1] hello")
    assert handler.lines[1].endswith("kernlet.test-logs-text: bare")


def test_a_thread_binding_reaches_the_coroutines_it_hands_to_the_loop(
    json_lines: list[str],
) -> None:
    log = logging.getLogger("kernlet.test-logs")
    loop = LoopThread().start()

    async def on_loop() -> None:
        log.info("from the loop")

    def actor_thread() -> None:
        logs.bind(kernel_id="k-thread")
        loop.submit(on_loop()).result(5)

    try:
        t = threading.Thread(target=actor_thread)
        t.start()
        t.join(10)
        loop.submit(on_loop()).result(5)  # from a thread with nothing bound
    finally:
        loop.stop()
    out = _parsed(json_lines)
    assert out[0]["kernel_id"] == "k-thread"
    assert "kernel_id" not in out[1]


class _Echo(LoopActor):
    """Logs while handling a message and in the continuation of a step it started."""

    def handle(self, message: Any) -> Any:
        log = logging.getLogger("kernlet.test-logs")
        log.info("handling")
        done = message.done

        def then(_: Any) -> None:
            log.info("continued")
            done.set()

        self.spawn(asyncio.sleep(0), then=then)


class _Msg:
    def __init__(self, kernel_id: str, run_id: str) -> None:
        self.kernel_id = kernel_id
        self.request = type("Req", (), {"run_id": run_id})()
        self.done = threading.Event()


def test_an_actor_logs_a_message_and_its_steps_with_the_ids_the_message_names(
    json_lines: list[str],
) -> None:
    loop = LoopThread().start()
    ref = _Echo.start(loop)
    try:
        msg = _Msg("k-msg", "r-msg")
        ref.tell(msg)
        assert msg.done.wait(10)
    finally:
        ref.stop()
        loop.stop()
    out = _parsed(json_lines)
    assert [(o["msg"], o["kernel_id"], o["run_id"]) for o in out] == [
        ("handling", "k-msg", "r-msg"), ("continued", "k-msg", "r-msg")]


def test_configure_writes_json_to_the_file_and_routes_uncaught_thread_errors(
    tmp_path: Path,
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, threading.excepthook, sys.excepthook)
    target = tmp_path / "logs" / "agent.log"
    try:
        logs.configure("warning", "json", target)
        logging.getLogger("kernlet.x").info("below the level")
        with logs.bound(kernel_id="k9"):
            logging.getLogger("kernlet.x").warning("kept")
        t = threading.Thread(target=lambda: 1 / 0, name="doomed")
        t.start()
        t.join()
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        threading.excepthook, sys.excepthook = saved[2], saved[3]
    out = [json.loads(line) for line in target.read_text().splitlines()]
    assert [o["msg"] for o in out] == ["kept", "uncaught exception in thread doomed"]
    assert out[0]["kernel_id"] == "k9"
    assert "ZeroDivisionError" in out[1]["exc"]


def test_logging_section_is_validated_by_key(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[logging]\nlevel = "debug"\nformat = "json"\nfile = "/tmp/x.log"\n')
    cfg = load_config(good)
    assert (cfg.logging.level, cfg.logging.format, cfg.logging.file) == (
        "debug", "json", Path("/tmp/x.log"))
    bad = tmp_path / "bad.toml"
    bad.write_text('[logging]\nformat = "xml"\n')
    with pytest.raises(ConfigError, match=r"logging\.format"):
        load_config(bad)


def test_sd_notify_sends_a_datagram_to_notify_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False  # not under systemd: nothing to do
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1\nSTATUS=serving") is True
        assert sock.recv(1024) == b"READY=1\nSTATUS=serving"
        abstract = f"kernlet-test-{os.getpid()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as asock:
            asock.bind("\0" + abstract)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + abstract)
            assert notify("STOPPING=1") is True
            assert asock.recv(1024) == b"STOPPING=1"


def test_the_shipped_unit_is_the_commands_output_and_waits_for_readiness() -> None:
    unit = render()
    assert (ROOT / "contrib/systemd/kernlet-agent.service").read_text() == unit
    assert "Type=notify\n" in unit and "Restart=always\n" in unit
    assert "ExecStart=/opt/kernlet/.venv/bin/kernlet agent\n" in unit
    custom = render("/usr/bin/kernlet", Path("/etc/k/agent.toml"))
    assert "ExecStart=/usr/bin/kernlet agent --config /etc/k/agent.toml\n" in custom


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def test_python_m_kernlet_and_kernlet_agent_are_the_cli() -> None:
    out = _run("-m", "kernlet", "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"kernlet, version {__version__}"
    assert "systemd-unit" in _run("-m", "kernlet", "--help").stdout
    agent = _run("-m", "kernlet.agent", "--help")
    assert agent.returncode == 0
    assert "Usage: python -m kernlet.agent" in agent.stdout and "--log-level" in agent.stdout
    bad = _run("-m", "kernlet.agent", "--log-level", "loud")
    assert bad.returncode == 2 and "--log-level" in bad.stderr
