"""A live agent's logs and metrics: JSON log lines naming the kernel they concern, and a
``/metrics`` that Prometheus's own linter (``promtool check metrics``, Debian's prometheus
package) finds nothing wrong with, counting requests by command and error."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from integration.conftest import IMAGE, NATS_URL, AgentProcess
from integration.test_watcher import free_port
from kernlet.client import KernletClient
from kernlet.errors import ImageNotFound, KernelNotFound

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class JsonAgent(AgentProcess):
    """An agent logging JSON lines to its own file, its watcher on a known port."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.json_log = root / "agent.jsonl"
        super().__init__(root, f"otest-{uuid.uuid4().hex[:8]}",
                         extra=f'[watcher]\nport = {self.port}\n'
                               f'[logging]\nformat = "json"\nlevel = "debug"\n'
                               f'file = "{self.json_log}"\n')
        text = self.config.read_text().replace(
            "[container]\n", "[container]\nport-range = [33200, 33299]\n", 1)
        self.config.write_text(text)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        # the records go to the file; the process's own stdout/stderr stay empty
        self.log = self.json_log
        super().start(timeout)


@pytest.fixture(scope="module")
def jagent(halfstack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsonAgent]:
    proc = JsonAgent(tmp_path_factory.mktemp("obs"))
    proc.start()
    yield proc
    proc.cleanup()


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"line {n} of the agent's log is not JSON: {line!r}") from exc
    return out


async def test_json_logs_of_create_exec_destroy_name_the_kernel(jagent: JsonAgent) -> None:
    before = len(jagent.json_log.read_text().splitlines())
    async with KernletClient(NATS_URL, agent_id=jagent.agent_id, timeout=90) as c:
        created = await c.create_kernel(IMAGE)
        kid = created["id"]
        run = await c.execute(kid, "print(6 * 7)", run_id=f"run-{kid}")
        assert run["status"] == "finished"
        await c.destroy_kernel(kid)
    records = _records(jagent.json_log)[before:]
    mine = [r for r in records if r.get("kernel_id") == kid]
    # every record that names the kernel in its text carries it as a field
    naming = [r for r in records if kid in r["msg"]]
    assert naming, "no record of the create, exec or destroy"
    assert all(r.get("kernel_id") == kid for r in naming), [
        r for r in naming if r.get("kernel_id") != kid]
    # the lifecycle is there, from preparing to terminated, and the run's events carry its id
    texts = " ".join(r["msg"] for r in mine)
    for event in ("kernel_preparing", "kernel_started", "kernel_terminated"):
        assert event in texts, event
    runs = [r for r in mine if "execution_" in r["msg"]]
    assert runs and all(r.get("run_id") == f"run-{kid}" for r in runs)
    assert {r["level"] for r in records} <= {"debug", "info", "warning", "error", "critical"}


async def test_metrics_pass_promtool_and_count_requests(jagent: JsonAgent) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: apt-get install -y --no-install-recommends prometheus")
    async with KernletClient(NATS_URL, agent_id=jagent.agent_id, timeout=90) as c:
        await c.ping()
        await c.ping()
        with pytest.raises(ImageNotFound):
            await c.create_kernel("kernlet/no-such-image:0")
        with pytest.raises(KernelNotFound):
            await c.destroy_kernel("no-such-kernel")
    async with aiohttp.ClientSession() as http:
        async with http.get(jagent.url + "/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
        async with http.get(jagent.url + "/metrics",
                            headers={"Accept": "application/openmetrics-text"}) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            om = await r.text()
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60, check=False)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), (
        lint.stdout + lint.stderr)
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in text.splitlines() if line and not line.startswith("#")}
    assert samples['kernlet_requests_total{command="ping",error="none"}'] >= 2
    assert samples['kernlet_requests_total{command="create_kernels",error="none"}'] >= 1
    assert samples['kernlet_requests_total{command="destroy_kernel",error="KernelNotFound"}'] >= 1
    assert samples['kernlet_request_duration_seconds_count{command="ping"}'] >= 2
    assert samples["process_resident_memory_bytes"] > 0
    assert samples["process_open_fds"] > 0
    assert "python_info{" in text
    assert om.endswith("# EOF\n") and "kernlet_requests_total{" in om


def test_the_agent_tells_systemd_it_is_ready_once_it_serves_and_when_it_stops(
    halfstack: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Type=notify: READY=1 over $NOTIFY_SOCKET after the agent answers NATS, STOPPING=1 on
    SIGTERM (a socket of our own stands in for systemd's)."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        (tmp_path / "a").mkdir()
        proc = JsonAgent(tmp_path / "a")
        try:
            proc.start()  # returns once the log says ready
            ready = sock.recv(4096).decode()
            assert ready.startswith("READY=1\n") and f"serving as {proc.agent_id}" in ready
            ping = subprocess.run(
                [sys.executable, "-m", "kernlet", "agent", "ping", "--agent-id", proc.agent_id],
                capture_output=True, text=True, timeout=60, check=False,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            assert ping.returncode == 0, ping.stderr
            assert proc.stop() == 0
            assert sock.recv(4096) == b"STOPPING=1"
        finally:
            proc.cleanup()
