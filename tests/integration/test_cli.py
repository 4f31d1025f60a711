"""The ``kernlet`` CLI against a live agent, run as the operator runs it: a subprocess.

Every verb that talks to the agent is driven with ``--json`` and its output parsed; Ctrl-C
(SIGINT to the CLI process) during an endless loop leaves the kernel idle and usable; the
documented exit codes come back for an unreachable NATS and for an agent id nobody serves.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.conftest import IMAGE, AgentProcess

pytestmark = pytest.mark.integration


def cli(agent: AgentProcess, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    group, rest = args[0], args[1:]
    if group == "kernel":
        argv = ["kernel", "--config", str(agent.config), *rest]
    else:  # agent ping|info, image pull: the options after the verb
        argv = [group, rest[0], "--config", str(agent.config), *rest[1:]]
    return subprocess.run([sys.executable, "-m", "kernlet.cli", *argv], capture_output=True,
                          text=True, timeout=timeout, check=False)


def ok_json(agent: AgentProcess, *args: str) -> Any:
    res = cli(agent, *args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def kid(agent: AgentProcess) -> Iterator[str]:
    res = ok_json(agent, "kernel", "create", "--image", IMAGE)
    yield res["id"]
    cli(agent, "kernel", "destroy", res["id"])


def test_agent_ping_and_info(agent: AgentProcess) -> None:
    pong = ok_json(agent, "agent", "ping")
    assert pong["agent_id"] == agent.agent_id
    assert pong["version"] and pong["rtt_ms"] >= 0
    info = ok_json(agent, "agent", "info")
    assert info["agent_id"] == agent.agent_id
    assert {"cpu", "mem"} <= set(info["slots"])
    assert set(info["slots"]["cpu"]) == {"type", "capacity", "used", "free"}
    assert "cpu" in info["plugins"]


def test_exec_streams_json_lines_and_exits_with_the_codes_own_status(
        agent: AgentProcess, kid: str) -> None:
    res = cli(agent, "kernel", "exec", kid, "--json", "--code", "print('a'); print('b')")
    assert res.returncode == 0, res.stderr
    items = json_lines(res.stdout)
    assert "".join(i["data"] for i in items if i["type"] == "stdout") == "a\nb\n"
    assert items[-1]["type"] == "result"
    assert items[-1]["data"]["status"] == "finished"
    assert cli(agent, "kernel", "exec", kid, "--code", "1/0").returncode == 1
    batch = cli(agent, "kernel", "exec", kid, "--mode", "batch", "--code", "exit 7")
    assert batch.returncode == 7
    slow = cli(agent, "kernel", "exec", kid, "--run-timeout", "1", "--code",
               "import time; time.sleep(30)")
    assert slow.returncode == 124


def test_agent_errors_have_their_exit_codes(agent: AgentProcess, kid: str) -> None:
    missing = cli(agent, "kernel", "exec", "no-such-kernel", "--code", "print(1)")
    assert missing.returncode == 66
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()]
    assert "KernelNotFound" in missing.stderr
    refused = cli(agent, "kernel", "files", kid, "../etc")
    assert refused.returncode == 65
    assert "InvalidRequest" in refused.stderr and "Traceback" not in refused.stderr


def test_ctrl_c_interrupts_the_run_and_the_kernel_stays_usable(
        agent: AgentProcess, kid: str) -> None:
    code = "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.05)\n"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kernlet.cli", "kernel", "--config", str(agent.config),
         "exec", kid, "--code", code],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "looping\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "KeyboardInterrupt" in err  # the run ended in the kernel, not just in the CLI
    started = time.monotonic()
    after = cli(agent, "kernel", "exec", kid, "--code", "print(1)", timeout=60)
    print(f"\nprint(1) after the interrupt answered in {time.monotonic() - started:.2f} s")
    assert (after.returncode, after.stdout) == (0, "1\n")


def test_files_and_cp_both_ways(agent: AgentProcess, kid: str, tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(700 * 1024))  # over one chunk
    up = json_lines(cli(agent, "kernel", "cp", str(src), f"{kid}:cli/in.bin", "--json").stdout)
    assert up == [{"from": str(src), "to": f"{kid}:cli/in.bin", "size": 700 * 1024}]
    listing = ok_json(agent, "kernel", "files", kid, "cli")
    assert listing["path"] == "/home/work/cli"
    assert [(f["name"], f["type"], f["size"]) for f in listing["files"]] == [
        ("in.bin", "file", 700 * 1024)]
    back = tmp_path / "back.bin"
    down = cli(agent, "kernel", "cp", f"{kid}:cli/in.bin", str(back), "--json")
    assert down.returncode == 0, down.stderr
    assert back.read_bytes() == src.read_bytes()

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("b")
    res = cli(agent, "kernel", "cp", "-r", str(tree), f"{kid}:trees/", "--json")
    assert res.returncode == 0, res.stderr
    assert sorted(i["to"] for i in json_lines(res.stdout)) == [
        f"{kid}:trees/tree/a.txt", f"{kid}:trees/tree/sub/b.txt"]
    out = tmp_path / "out"
    out.mkdir()
    res = cli(agent, "kernel", "cp", "-r", f"{kid}:trees/tree", str(out), "--json")
    assert res.returncode == 0, res.stderr
    assert (out / "tree" / "a.txt").read_text() == "a"
    assert (out / "tree" / "sub" / "b.txt").read_text() == "b"
    no_r = cli(agent, "kernel", "cp", f"{kid}:trees", str(out))
    assert no_r.returncode == 65 and "-r" in no_r.stderr


def test_logs_complete_interrupt_events(agent: AgentProcess, kid: str) -> None:
    logs = ok_json(agent, "kernel", "logs", kid, "--tail", "5")
    assert logs["kernel_id"] == kid
    assert isinstance(logs["logs"], str) and len(logs["logs"].splitlines()) <= 5
    comp = ok_json(agent, "kernel", "complete", kid, "pri")
    assert "print" in comp["matches"]
    assert ok_json(agent, "kernel", "interrupt", kid) == {"interrupted": True}
    evs = ok_json(agent, "kernel", "events", kid)
    assert evs[0]["type"] == "kernel_preparing"
    assert "execution_finished" in {e["type"] for e in evs}
    kernels = ok_json(agent, "kernel", "ls")
    assert kid in {k["id"] for k in kernels}
    text = cli(agent, "kernel", "events", kid)
    assert text.returncode == 0
    assert "T" in text.stdout.splitlines()[1].split()[1]  # ISO-8601 times in the table


def test_service_start_stop(agent: AgentProcess, kid: str) -> None:
    started = ok_json(agent, "kernel", "service", "start", kid, "terminal")
    assert started["name"] == "terminal" and started["url"].startswith("http://")
    stopped = ok_json(agent, "kernel", "service", "stop", kid, "terminal")
    assert stopped == {"name": "terminal", "stopped": True}


def test_image_pull_of_a_present_image(agent: AgentProcess) -> None:
    res = cli(agent, "image", "pull", IMAGE, "--json")
    assert res.returncode == 0, res.stderr
    (last,) = json_lines(res.stdout)
    assert last["type"] == "result"
    assert last["data"]["status"] == "present" and last["data"]["image"] == IMAGE


def test_restart_then_destroy(agent: AgentProcess) -> None:
    k = ok_json(agent, "kernel", "create", "--image", IMAGE)
    restarted = ok_json(agent, "kernel", "restart", k["id"])
    assert restarted["id"] == k["id"]
    after = cli(agent, "kernel", "exec", k["id"], "--code", "print(2)")
    assert (after.returncode, after.stdout) == (0, "2\n")
    gone = ok_json(agent, "kernel", "destroy", k["id"])
    assert gone["reason"] == "user-requested"


def test_create_a_cluster_of_two_with_shm_a_preopened_port_and_a_bootstrap(
    agent: AgentProcess, tmp_path: Path,
) -> None:
    """``--count 2 --cluster``: one create_kernels call, one session on its own network;
    each kernel has the /dev/shm asked for, its preopened port's host port in the result,
    and ran the bootstrap script before the runtime."""
    script = tmp_path / "boot.sh"
    script.write_text("echo booted > /home/work/boot.txt\n")
    res = ok_json(agent, "kernel", "create", "--image", IMAGE, "--count", "2", "--cluster",
                  "--shm-size", "96m", "--preopen-port", "8080", "--bootstrap", str(script))
    try:
        assert [r["ok"] for r in res] == [True, True]
        assert len({r["id"] for r in res}) == 2
        for r in res:
            assert [p["container_port"] for p in r["service_ports"]
                    if p["protocol"] == "preopen"] == [8080]
        code = ("import os, socket; s = os.statvfs('/dev/shm'); "
                "print(s.f_blocks * s.f_frsize // 2**20, socket.gethostname(), "
                "open('/home/work/boot.txt').read().strip())")
        seen = [cli(agent, "kernel", "exec", r["id"], "--code", code).stdout.split()
                for r in res]
        assert sorted(seen) == [["96", "main1", "booted"], ["96", "sub1", "booted"]]
    finally:
        for r in res:
            cli(agent, "kernel", "destroy", r["id"])


def test_create_refuses_a_cluster_of_one(agent: AgentProcess) -> None:
    res = cli(agent, "kernel", "create", "--image", IMAGE, "--cluster")
    assert res.returncode == 2 and "--count" in res.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_nats_is_one_line_and_exit_69(agent: AgentProcess) -> None:
    url = f"nats://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    res = cli(agent, "kernel", "--nats", url, "ls", timeout=60)
    took = time.monotonic() - started
    print(f"\nunreachable NATS answered in {took:.2f} s (process start included)")
    assert res.returncode == 69
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "cannot reach NATS" in res.stderr


def test_an_agent_nobody_serves_is_answered_with_69(agent: AgentProcess) -> None:
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    res = cli(agent, "kernel", "--agent-id", nobody, "exec", "k1", "--code", "print(1)",
              timeout=60)
    took = time.monotonic() - started
    print(f"\nunserved agent id answered in {took:.2f} s (process start included)")
    assert res.returncode == 69
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert nobody in res.stderr
