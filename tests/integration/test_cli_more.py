"""More of the ``kernlet`` CLI against a live agent, as subprocesses: ``agents ls``,
``events [--follow]``, ``config show|validate|sample``, ``kernel logs --follow`` and the
second Ctrl-C of ``kernel exec`` (it detaches; the first interrupts). Each with ``--json``."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import IMAGE, AgentProcess

pytestmark = pytest.mark.integration

KERNLET = [sys.executable, "-m", "kernlet.cli"]


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KERNLET, *argv], capture_output=True, text=True, timeout=timeout,
                          check=False)


def ok_json(*argv: str) -> Any:
    res = run(*argv, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


class Lines:
    """A CLI process whose stdout is read line by line (by a thread), with a deadline."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen([*KERNLET, *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def until(self, pred: Any, timeout: float = 60) -> str:
        """Read lines until one satisfies ``pred``; every line read is kept in ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no such line in {self.seen[-20:]!r}")
            self.seen.append(line)
            if pred(line):
                return line

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Wait for the exit; the rest of stdout goes to ``seen``. (exit code, stderr)"""
        _, err = self.proc.communicate(timeout=timeout)  # stdout is the thread's
        while (line := self._lines.get(timeout=10)) is not None:
            self.seen.append(line)
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def kid(agent: AgentProcess) -> Iterator[str]:
    res = ok_json("kernel", "--config", str(agent.config), "create", "--image", IMAGE)
    yield res["id"]
    run("kernel", "--config", str(agent.config), "destroy", res["id"])


def test_agents_ls_finds_the_agent_through_etcd_and_its_heartbeat(
        agent: AgentProcess) -> None:
    # heartbeats come every 10 s: listen a little longer than one interval
    rows = ok_json("agents", "ls", "--config", str(agent.config), "--listen", "11")
    mine = {r["id"]: r for r in rows}[agent.agent_id]
    assert mine["seen"] == ["etcd", "heartbeat"]
    assert mine["answers"] is True and mine["version"]
    assert {"cpu", "mem"} <= set(mine["slots"])
    assert float(mine["slots"]["cpu"]["free"]) > 0
    assert mine["last_seen"] > time.time() - 60
    table = run("agents", "ls", "--config", str(agent.config), "--listen", "0")
    assert table.returncode == 0, table.stderr
    assert any(line.split()[0] == agent.agent_id for line in table.stdout.splitlines()[1:])


def test_events_follow_prints_a_new_kernels_events_once_each(agent: AgentProcess) -> None:
    # --since: the events of the last minute first, so none is missed while this starts
    follow = Lines("events", "--config", str(agent.config), "--follow", "--since", "60",
                   "--json")
    try:
        created = ok_json("kernel", "--config", str(agent.config), "create", "--image",
                          IMAGE)
        k = created["id"]
        follow.until(lambda line: json.loads(line)["type"] == "kernel_started"
                     and json.loads(line)["kernel_id"] == k)
        follow.proc.send_signal(signal.SIGINT)
        code, _ = follow.finish()
    finally:
        follow.kill()
    assert code == 130  # Ctrl-C ends a follow
    evs = [json.loads(line) for line in follow.seen if line.strip()]
    assert len({e["id"] for e in evs}) == len(evs)  # each event once
    mine = [e["type"] for e in evs if e["kernel_id"] == k]
    assert mine[0] == "kernel_preparing" and mine[-1] == "kernel_started"
    # without --follow: what the stream stored, then exit; one kernel's only
    past = run("events", "--config", str(agent.config), "--kernel", k, "--json")
    assert past.returncode == 0, past.stderr
    stored = [json.loads(line) for line in past.stdout.splitlines()]
    assert [e["type"] for e in stored][:len(mine)] == mine
    assert {e["kernel_id"] for e in stored} == {k}
    run("kernel", "--config", str(agent.config), "destroy", k)


def test_config_show_validate_sample(agent: AgentProcess, tmp_path: Path) -> None:
    shown = ok_json("config", "show", str(agent.config))
    assert shown["agent"]["id"] == agent.agent_id
    assert shown["limits"]["max-request"] == 256 * 1024
    assert ok_json("config", "validate", str(agent.config)) == {
        "path": str(agent.config), "ok": True, "errors": []}
    bad = tmp_path / "bad.toml"
    bad.write_text('[container]\nport-range = [1, "x"]\nbogus = 1\n[agent]\nid = 5\n')
    res = run("config", "validate", str(bad), "--json")
    assert res.returncode == 78
    report = json.loads(res.stdout)
    assert report["ok"] is False
    assert {e["key"] for e in report["errors"]} == {
        "container.port-range.1", "container.bogus", "agent.id"}
    text = run("config", "validate", str(bad))
    assert text.returncode == 78 and "container.bogus" in text.stderr
    assert "Traceback" not in text.stderr
    defaults = ok_json("config", "sample")
    assert defaults["container"]["port-range"] == [30000, 31000]
    sample = run("config", "sample")
    assert sample.returncode == 0
    written = tmp_path / "sample.toml"
    written.write_text(sample.stdout)
    assert ok_json("config", "validate", str(written))["ok"] is True


def test_logs_follow_prints_new_lines_until_the_kernel_is_gone(
        agent: AgentProcess, kid: str) -> None:
    follow = Lines("kernel", "--config", str(agent.config), "logs", kid, "--follow",
                   "--json")
    try:
        follow.until(lambda line: "serving on" in json.loads(line)["line"])
        # the ipykernel dies: the runtime logs that it restarts it
        run("kernel", "--config", str(agent.config), "exec", kid, "--code",
            "import os; os._exit(1)")
        follow.until(lambda line: "ipykernel restarted" in json.loads(line)["line"])
        gone = run("kernel", "--config", str(agent.config), "destroy", kid)
        assert gone.returncode == 0, gone.stderr
        code, err = follow.finish(timeout=60)
    finally:
        follow.kill()
    assert code == 0 and "is gone" in err
    items = [json.loads(line) for line in follow.seen if line.strip()]
    assert all(i["kernel_id"] == kid and i["time"].endswith("Z") for i in items)
    keys = [(i["time"], i["line"]) for i in items]
    assert len(set(keys)) == len(keys)  # no line twice
    missing = run("kernel", "--config", str(agent.config), "logs", "nope", "--follow")
    assert missing.returncode == 66


def test_a_second_ctrl_c_detaches_and_the_first_only_interrupts(
        agent: AgentProcess, kid: str) -> None:
    code = ("import time\nn = 0\nprint('looping', flush=True)\nwhile n < 2:\n"
            "    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n"
            "        n += 1\n        print('caught', n, flush=True)\n")
    proc = Lines("kernel", "--config", str(agent.config), "exec", kid, "--code", code)
    try:
        proc.until(lambda line: line == "looping\n")
        proc.proc.send_signal(signal.SIGINT)
        proc.until(lambda line: line == "caught 1\n")  # interrupted in the kernel ...
        assert proc.proc.poll() is None  # ... and the CLI still streams (the code runs on)
        proc.proc.send_signal(signal.SIGINT)
        rc, err = proc.finish(timeout=20)
    finally:
        proc.kill()
    assert rc == 130 and "detached" in err
    assert "Traceback" not in err
    # the code still runs in the kernel: one more interrupt ends it, then it is usable
    assert ok_json("kernel", "--config", str(agent.config), "interrupt", kid) == {
        "interrupted": True}
    after = run("kernel", "--config", str(agent.config), "exec", kid, "--json", "--code",
                "print(3)", timeout=60)
    assert after.returncode == 0, after.stderr
    lines = [json.loads(line) for line in after.stdout.splitlines()]
    assert lines[0] == {"type": "stdout", "data": "3\n"}
    assert lines[-1]["type"] == "result" and lines[-1]["data"]["status"] == "finished"
