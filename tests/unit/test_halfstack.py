"""halfstack: probes against real sockets, and the pid-file rules against real processes.

Every service here is a stand-in started by the test (sleep, python -m http.server) on a port
or state directory of its own, so the machine's real services are never touched.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import random
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kernlet import halfstack as hs

# --- helpers --------------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    """True when ``pid`` has exited: a zombie counts as exited once its threads are gone too
    (``num_threads``, field 20 of stat, counts the zombie main thread itself)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] in ("Z", "X") and int(fields[17]) <= 1


def _closed_port() -> int:
    """A loopback port on which nothing listens, outside the ephemeral range (where Docker
    and other tests pick ports at random, so one might be taken right after we let it go)."""
    for port in random.sample(range(20000, 29000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29000")


@pytest.fixture
def line_server() -> Iterator[Callable[..., int]]:
    """Start loopback TCP servers that send ``greeting`` on connect and, after each line
    received, ``reply``; returns their port."""
    servers: list[socketserver.ThreadingTCPServer] = []

    def start(reply: bytes, greeting: bytes = b"") -> int:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                if greeting:
                    self.wfile.write(greeting)
                while self.rfile.readline():
                    self.wfile.write(reply)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _json_handler(routes: dict[str, object]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(routes[self.path]).encode() if self.path in routes else b"{}"
            self.send_response(200 if self.path in routes else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def http_server() -> Iterator[Callable[[dict[str, object]], int]]:
    """Start loopback HTTP servers answering GET ``path`` with JSON ``routes[path]``."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(routes: dict[str, object]) -> int:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _json_handler(routes))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still running at the end are killed (by their pid)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if not _gone(proc.pid):
            os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            proc.wait(timeout=5)


def _wait_for_argv0(pid: int, argv0: str) -> None:
    """Wait until ``pid`` has exec'd the program that shows ``argv0`` (not python, not bash)."""
    for _ in range(500):
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == argv0.encode():
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never showed argv[0] {argv0!r}")


def _sleeper(procs: list[subprocess.Popen[bytes]], argv0: str = "sleep") -> int:
    proc = subprocess.Popen(["bash", "-c", f'exec -a "{argv0}" sleep 30'])
    procs.append(proc)
    _wait_for_argv0(proc.pid, argv0)
    return proc.pid


def _service(
    name: str, binary: str, command: list[str], probe: Callable[[], hs.Probe], timeout: float = 10
) -> hs.Service:
    return hs.Service(
        name=name,
        endpoint="test",
        binary=binary,
        package="none",
        command=lambda _data: command,
        probe=probe,
        start_timeout=timeout,
    )


def _never() -> hs.Probe:
    return hs.Probe(False, "never answers")


# --- probes ---------------------------------------------------------------------------------


def test_redis_probe_wants_pong(line_server: Callable[..., int]) -> None:
    assert hs.probe_redis(port=line_server(b"+PONG\r\n")) == hs.Probe(True, "PONG")
    noauth = hs.probe_redis(port=line_server(b"-NOAUTH Authentication required.\r\n"))
    assert not noauth.answering
    assert "NOAUTH" in noauth.detail


def test_probes_report_closed_ports() -> None:
    port = _closed_port()
    for probe in (hs.probe_redis(port=port), hs.probe_etcd(port=port), hs.probe_nats(port=port)):
        assert not probe.answering
        assert probe.detail == "Connection refused"


def test_etcd_probe_reads_health(http_server: Callable[[dict[str, object]], int]) -> None:
    assert hs.probe_etcd(port=http_server({"/health": {"health": "true"}})).answering
    sick = hs.probe_etcd(port=http_server({"/health": {"health": "false"}}))
    assert not sick.answering
    assert "false" in sick.detail


def test_nats_probe_checks_info_and_jetstream(
    line_server: Callable[..., int], http_server: Callable[[dict[str, object]], int]
) -> None:
    info = b'INFO {"version":"2.9.10","jetstream":true}\r\n'
    with_js = http_server({"/jsz": {"config": {"store_dir": "/x"}, "memory": 0}})
    without_js = http_server({"/jsz": {"disabled": True}})
    port = line_server(b"+OK\r\n", info)

    enabled = hs.probe_nats(port=port, monitor_port=with_js)
    assert enabled == hs.Probe(True, "nats 2.9.10; JetStream enabled")
    disabled = hs.probe_nats(port=port, monitor_port=without_js)
    assert disabled.answering
    assert "JetStream DISABLED" in disabled.detail
    no_monitor = hs.probe_nats(port=port, monitor_port=_closed_port())
    assert no_monitor.answering
    assert "JetStream unknown" in no_monitor.detail


def test_nats_probe_rejects_other_servers(line_server: Callable[..., int]) -> None:
    probe = hs.probe_nats(port=line_server(b"", b"SSH-2.0-OpenSSH\r\n"), monitor_port=1)
    assert not probe.answering
    assert "not NATS" in probe.detail


def test_docker_probe_pings_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "docker.sock")
    assert not hs.probe_docker(path).answering  # no socket yet

    class Ping(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/_ping"
            self.send_response(200 if ok else 404)
            self.send_header("Api-Version", "1.41")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK" if ok else b"no")

        def address_string(self) -> str:
            return "unix"

        def log_message(self, *args: object) -> None:
            pass

    class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    server = UnixHTTPServer(path, Ping)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert hs.probe_docker(path) == hs.Probe(True, "API 1.41")
    finally:
        server.shutdown()
        server.server_close()


# --- pid files: down stops what was recorded, and only that ---------------------------------


def test_down_stops_only_recorded_pids(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    recorded, other = _sleeper(procs), _sleeper(procs)
    svc = _service("sleeper", "sleep", ["30"], _never)
    svc.pid_file(tmp_path).write_text(f"{recorded}\n")

    [result] = hs.down(tmp_path, [svc], timeout=5)

    assert result.note == f"stopped (pid {recorded})"
    assert _gone(recorded)
    assert not _gone(other)
    assert not svc.pid_file(tmp_path).exists()
    # a second down has nothing left to do
    assert hs.down(tmp_path, [svc])[0].note == "not started by kernlet"


def test_down_refuses_when_cmdline_does_not_match(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    pid = _sleeper(procs)
    svc = _service("redis", "redis-server", [], _never)
    svc.pid_file(tmp_path).write_text(f"{pid}\n")

    note = hs.stop_recorded(svc, tmp_path, timeout=1)

    assert note.startswith(f"refused: pid {pid} runs 'sleep 30'")
    assert not _gone(pid)
    assert svc.pid_file(tmp_path).exists()  # left for a person to look at
    assert hs.status(tmp_path, [svc])[0].pid is None  # and not counted as kernlet's


def test_down_matches_rewritten_process_titles(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    # redis-server rewrites argv[0] into "/usr/bin/redis-server 127.0.0.1:6379"
    pid = _sleeper(procs, argv0="/usr/bin/sleep 127.0.0.1:6379")
    svc = _service("sleeper", "sleep", ["30"], _never)
    svc.pid_file(tmp_path).write_text(f"{pid}\n")

    assert hs.stop_recorded(svc, tmp_path, timeout=5) == f"stopped (pid {pid})"
    assert _gone(pid)


def test_down_escalates_to_sigkill(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    proc = subprocess.Popen(["bash", "-c", "trap '' TERM; exec -a stubborn sleep 300"])
    procs.append(proc)
    svc = _service("stubborn", "stubborn", [], _never)
    _wait_for_argv0(proc.pid, "stubborn")
    svc.pid_file(tmp_path).write_text(f"{proc.pid}\n")

    started = time.monotonic()
    note = hs.stop_recorded(svc, tmp_path, timeout=0.5)

    assert time.monotonic() - started < 10
    assert note.startswith("killed (no exit within")
    assert _gone(proc.pid)


def test_down_removes_pid_file_of_exited_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()
    svc = _service("sleeper", "sleep", [], _never)
    svc.pid_file(tmp_path).write_text(f"{proc.pid}\n")

    assert hs.stop_recorded(svc, tmp_path) == f"pid {proc.pid} had already exited; pid file removed"
    assert not svc.pid_file(tmp_path).exists()


# --- up: start, wait, be idempotent ---------------------------------------------------------


def _tcp_probe(port: int) -> Callable[[], hs.Probe]:
    def probe() -> hs.Probe:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError as exc:
            return hs.Probe(False, str(exc))
        return hs.Probe(True, "listening")

    return probe


def test_up_starts_waits_is_idempotent_and_down_stops(tmp_path: Path) -> None:
    port = _closed_port()
    command = ["-m", "http.server", "--bind", "127.0.0.1", str(port)]
    svc = _service("web", sys.executable, command, _tcp_probe(port))
    try:
        [first] = hs.up(tmp_path, [svc], install=False)
        assert first.answering
        assert first.note == "started by kernlet"
        assert first.pid == hs.read_pid_file(svc.pid_file(tmp_path))
        assert first.log_file == tmp_path / "web.log"
        assert first.log_file.exists()

        [again] = hs.up(tmp_path, [svc], install=False)
        assert again.note == "running (started by kernlet)"
        assert again.pid == first.pid  # nothing new was started

        [st] = hs.status(tmp_path, [svc])
        assert (st.answering, st.pid, st.note) == (True, first.pid, "started by kernlet")
    finally:
        [stopped] = hs.down(tmp_path, [svc], timeout=5)
    assert first.pid is not None
    assert stopped.note == f"stopped (pid {first.pid})"
    assert _gone(first.pid)
    assert not stopped.answering


# On SIGTERM only the main thread of this stand-in exits; another thread runs on and holds the
# listening socket. /proc/PID/stat then shows the process as a zombie, as it does for a
# moment whenever a threaded server (http.server with a request thread, dockerd) exits and
# its main thread is done before the others: the window in which `down` used to report
# "stopped" and then find the service still answering.
_MAIN_THREAD_EXITS_FIRST = """
import ctypes, signal, socket, sys, threading, time
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
libc = ctypes.CDLL(None)
signal.signal(signal.SIGTERM, lambda *_: libc.pthread_exit(None))
threading.Thread(target=time.sleep, args=(300,)).start()
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def test_down_waits_for_every_thread_not_only_the_main_one(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    port = _closed_port()
    argv = [sys.executable, "-c", _MAIN_THREAD_EXITS_FIRST, str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    svc = _service("threads", sys.executable, [], _tcp_probe(port))
    svc.pid_file(tmp_path).write_text(f"{proc.pid}\n")

    [result] = hs.down(tmp_path, [svc], timeout=1)

    # a zombie main thread with a thread still running is not stopped: SIGKILL ends them all
    assert result.note == f"killed (no exit within 1s of SIGTERM) (pid {proc.pid})"
    assert not result.answering
    assert _gone(proc.pid)


def test_up_leaves_a_service_answering_already_alone(
    tmp_path: Path, line_server: Callable[..., int]
) -> None:
    port = line_server(b"")
    svc = _service("web", "definitely-not-installed", [], _tcp_probe(port))

    [result] = hs.up(tmp_path, [svc], install=False)

    assert result.note == "already running (not started by kernlet)"
    assert result.pid is None
    assert not svc.pid_file(tmp_path).exists()
    assert hs.down(tmp_path, [svc])[0].note == "not started by kernlet"


def test_up_names_service_and_log_when_it_exits(tmp_path: Path) -> None:
    command = ["-c", "import sys; print('boom'); sys.exit(3)"]
    svc = _service("crashy", sys.executable, command, _never)
    with pytest.raises(hs.HalfstackError) as err:
        hs.up(tmp_path, [svc], install=False)
    message = str(err.value)
    assert "crashy exited with code 3" in message
    assert str(tmp_path / "crashy.log") in message
    assert "boom" in (tmp_path / "crashy.log").read_text()
    assert not svc.pid_file(tmp_path).exists()


def test_up_times_out_with_service_and_log(tmp_path: Path) -> None:
    svc = _service("mute", "sleep", ["30"], _never, timeout=0.5)
    try:
        with pytest.raises(hs.HalfstackError, match=r"mute \(pid \d+\) did not answer within"):
            hs.up(tmp_path, [svc], install=False)
        pid = hs.read_pid_file(svc.pid_file(tmp_path))
        assert pid is not None
        assert not _gone(pid)  # left running: down stops it
    finally:
        hs.down(tmp_path, [svc], timeout=5)
    assert _gone(pid)


def test_state_dir_comes_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KERNLET_HALFSTACK_DIR", str(tmp_path))
    assert hs.resolve_state_dir() == tmp_path
    assert hs.resolve_state_dir("/elsewhere") == Path("/elsewhere")
    monkeypatch.delenv("KERNLET_HALFSTACK_DIR")
    assert hs.resolve_state_dir() == hs.DEFAULT_STATE_DIR


def test_nothing_to_install_when_all_programs_exist(tmp_path: Path) -> None:
    svc = _service("sleeper", "sleep", [], _never)
    assert hs.ensure_installed(tmp_path / "apt.log", [svc], tools={"sh": "dash"}) == []
    assert not (tmp_path / "apt.log").exists()
