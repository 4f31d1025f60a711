"""The half stack: the real services kernlet needs, on loopback, started by kernlet itself.

``up`` installs what is missing from Debian's packages, starts each service that does not
answer yet (in its own session, logging to a file in the state directory, with a pid file) and
waits until it answers. ``down`` stops only what ``up`` started, and only after checking that
the recorded pid still runs the same program. ``status`` probes each service.

The probes use the standard library only, so that they work before any service exists.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_STATE_DIR",
    "SERVICES",
    "TOOLS",
    "HalfstackError",
    "Probe",
    "Service",
    "ServiceStatus",
    "down",
    "ensure_installed",
    "probe_docker",
    "probe_etcd",
    "probe_nats",
    "probe_redis",
    "read_pid_file",
    "resolve_state_dir",
    "status",
    "stop_recorded",
    "up",
]

DEFAULT_STATE_DIR = Path("/var/lib/kernlet/halfstack")
DOCKER_SOCKET = "/var/run/docker.sock"
LOOPBACK = "127.0.0.1"
NATS_PORT, NATS_MONITOR_PORT = 4222, 8222
ETCD_PORT, ETCD_PEER_PORT = 2379, 2380
REDIS_PORT = 6379
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class HalfstackError(Exception):
    """A service could not be installed, started or stopped; the message says which and why."""


@dataclass(frozen=True)
class Probe:
    """The outcome of asking a service whether it answers."""

    answering: bool
    detail: str = ""


@dataclass(frozen=True)
class Service:
    """One service of the half stack: how to install, start and probe it."""

    name: str
    endpoint: str  # where it answers, for people: "127.0.0.1:6379", "unix:///var/run/docker.sock"
    binary: str  # the program ``command`` runs, found on PATH
    package: str  # the Debian package that provides ``binary``
    command: Callable[[Path], list[str]]  # arguments after the binary, given the data directory
    probe: Callable[[], Probe]
    start_timeout: float = 30.0

    def argv(self, state_dir: Path) -> list[str]:
        return [_which(self.binary) or self.binary, *self.command(state_dir / self.name)]

    def pid_file(self, state_dir: Path) -> Path:
        return state_dir / f"{self.name}.pid"

    def log_file(self, state_dir: Path) -> Path:
        return state_dir / f"{self.name}.log"


@dataclass(frozen=True)
class ServiceStatus:
    """What ``up``, ``down`` or ``status`` found or did for one service."""

    name: str
    endpoint: str
    answering: bool
    pid: int | None  # the pid kernlet recorded, when kernlet started it
    note: str  # who runs it, or what ``down`` did
    detail: str = ""  # what the probe said
    log_file: Path | None = None

    @property
    def managed(self) -> bool:
        return self.pid is not None


# --- probes ---------------------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def probe_docker(path: str = DOCKER_SOCKET, timeout: float = 2.0) -> Probe:
    """``GET /_ping`` over Docker's unix socket."""
    conn = _UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        body = resp.read(64).decode(errors="replace")
        version = resp.getheader("Api-Version") or "?"
    except OSError as exc:
        return Probe(False, f"{path}: {_why(exc)}")
    except http.client.HTTPException as exc:
        return Probe(False, f"{path}: not HTTP ({exc.__class__.__name__})")
    finally:
        conn.close()
    if resp.status == 200 and body.strip() == "OK":
        return Probe(True, f"API {version}")
    return Probe(False, f"/_ping answered {resp.status} {body.strip()!r}")


def _why(exc: Exception) -> str:
    """A short reason: "Connection refused" rather than "<urlopen error [Errno 111] ...>"."""
    reason = getattr(exc, "reason", None)  # urllib's URLError wraps the OSError
    if isinstance(reason, Exception):
        exc = reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(reason or exc) or exc.__class__.__name__


def _http_get_json(url: str, timeout: float) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback http only)
        return json.loads(resp.read())


def probe_nats(
    host: str = LOOPBACK,
    port: int = NATS_PORT,
    monitor_port: int = NATS_MONITOR_PORT,
    timeout: float = 2.0,
) -> Probe:
    """TCP connect and read the server's ``INFO``; then ``/jsz`` on the monitoring port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            line = sock.makefile("rb").readline(65536).decode(errors="replace")
    except OSError as exc:
        return Probe(False, _why(exc))
    if not line.startswith("INFO "):
        return Probe(False, f"{host}:{port} is not NATS (said {line[:40]!r})")
    try:
        info = json.loads(line[5:])
    except ValueError:
        info = {}
    version = info.get("version", "?") if isinstance(info, dict) else "?"
    try:
        jsz = _http_get_json(f"http://{host}:{monitor_port}/jsz", timeout)
    except (OSError, ValueError) as exc:
        return Probe(True, f"nats {version}; JetStream unknown (/jsz: {_why(exc)})")
    enabled = isinstance(jsz, dict) and not jsz.get("disabled") and "config" in jsz
    return Probe(True, f"nats {version}; JetStream {'enabled' if enabled else 'DISABLED'}")


def probe_etcd(host: str = LOOPBACK, port: int = ETCD_PORT, timeout: float = 2.0) -> Probe:
    """``GET /health``."""
    try:
        health = _http_get_json(f"http://{host}:{port}/health", timeout)
    except (OSError, ValueError) as exc:
        return Probe(False, _why(exc))
    if isinstance(health, dict) and health.get("health") == "true":
        return Probe(True, "healthy")
    return Probe(False, f"/health answered {health!r}")


def probe_redis(host: str = LOOPBACK, port: int = REDIS_PORT, timeout: float = 2.0) -> Probe:
    """``PING``, expecting ``+PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.makefile("rb").readline(1024).decode(errors="replace").strip()
    except OSError as exc:
        return Probe(False, _why(exc))
    if reply == "+PONG":
        return Probe(True, "PONG")
    return Probe(False, f"PING answered {reply[:60]!r}")


def _nats_ready() -> Probe:
    # A nats-server that kernlet starts must have JetStream; "answering" alone is not enough.
    probe = probe_nats()
    if probe.answering and "JetStream enabled" not in probe.detail:
        return Probe(False, probe.detail)
    return probe


# --- the services ---------------------------------------------------------------------------

SERVICES: tuple[Service, ...] = (
    Service(
        name="docker",
        endpoint=f"unix://{DOCKER_SOCKET}",
        binary="dockerd",
        package="docker.io",
        # --ip: ports published without an address bind to loopback, never to all interfaces.
        command=lambda _data: ["--host", f"unix://{DOCKER_SOCKET}", "--ip", LOOPBACK],
        probe=probe_docker,
        start_timeout=60.0,
    ),
    Service(
        name="nats",
        endpoint=f"{LOOPBACK}:{NATS_PORT}, http :{NATS_MONITOR_PORT}",
        binary="nats-server",
        package="nats-server",
        command=lambda data: [
            "-a", LOOPBACK, "-p", str(NATS_PORT), "-m", str(NATS_MONITOR_PORT),
            "-js", "-sd", str(data),
        ],
        probe=_nats_ready,
    ),
    Service(
        name="etcd",
        endpoint=f"{LOOPBACK}:{ETCD_PORT}, peer :{ETCD_PEER_PORT}",
        binary="etcd",
        package="etcd-server",
        command=lambda data: [
            "--data-dir", str(data),
            "--listen-client-urls", f"http://{LOOPBACK}:{ETCD_PORT}",
            "--advertise-client-urls", f"http://{LOOPBACK}:{ETCD_PORT}",
            "--listen-peer-urls", f"http://{LOOPBACK}:{ETCD_PEER_PORT}",
        ],
        probe=probe_etcd,
    ),
    Service(
        name="redis",
        endpoint=f"{LOOPBACK}:{REDIS_PORT}",
        binary="redis-server",
        package="redis-server",
        command=lambda data: [
            "--bind", LOOPBACK, "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
            "--dir", str(data),
        ],
        probe=probe_redis,
    ),
)

# Programs that are not services but that kernlet needs: the docker CLI, docker's init (for
# `docker run --init`), and the image builder.
TOOLS: dict[str, str] = {
    "docker": "docker.io",
    "tini": "tini",
    "mmdebstrap": "mmdebstrap",
    # a local registry on loopback stands in for pulls (check_and_pull and its tests)
    "docker-registry": "docker-registry",
}


def resolve_state_dir(state_dir: Path | str | None = None) -> Path:
    """The explicit directory, else ``$KERNLET_HALFSTACK_DIR``, else the default."""
    if state_dir is None:
        state_dir = os.environ.get("KERNLET_HALFSTACK_DIR") or DEFAULT_STATE_DIR
    return Path(state_dir)


# --- installing -----------------------------------------------------------------------------


def _which(binary: str) -> str | None:
    path = os.environ.get("PATH", "")
    return shutil.which(binary, path=f"{path}:{_SBIN_PATH}" if path else _SBIN_PATH)


def ensure_installed(
    log_file: Path,
    services: Iterable[Service] = SERVICES,
    tools: dict[str, str] | None = None,
    say: Callable[[str], None] = lambda _msg: None,
) -> list[str]:
    """Install, from Debian's packages, those whose programs are missing. Returns them.

    ``apt-get update`` runs only when a first install attempt fails. Package scripts are kept
    from starting services (policy-rc.d), since ``up`` starts them itself. apt's output goes
    to ``log_file``.
    """
    wanted = dict(TOOLS if tools is None else tools)
    wanted.update({svc.binary: svc.package for svc in services})
    missing = sorted({pkg for binary, pkg in wanted.items() if _which(binary) is None})
    if not missing:
        return []
    if _which("apt-get") is None:
        raise HalfstackError(f"missing {', '.join(missing)}, and no apt-get to install them")
    say(f"installing {' '.join(missing)} with apt-get (log: {log_file})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log, _no_service_starts():

        def run(argv: list[str]) -> int:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                  env=env, check=False).returncode

        if run(install) != 0:
            say("apt-get install failed; running apt-get update and trying again")
            run(["apt-get", "update"])
            if run(install) != 0:
                raise HalfstackError(f"apt-get install {' '.join(missing)} failed; see {log_file}")
    return missing


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Keep packages' maintainer scripts from starting their services (Debian's policy-rc.d)."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# kernlet halfstack: no starts during install\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


# --- pid files ------------------------------------------------------------------------------


def read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # zombies count as gone


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _runs(pid: int, binary: str) -> bool:
    """Whether ``pid`` is alive and still runs ``binary`` (compared by file name).

    Only the first word of argv[0] counts: redis-server rewrites its whole command line
    into argv[0] ("/usr/bin/redis-server 127.0.0.1:6379").
    """
    args = _cmdline(pid)
    program = args[0].split()[0] if args and args[0].split() else ""
    return _alive(pid) and Path(program).name == Path(binary).name


def _recorded_pid(svc: Service, state_dir: Path) -> int | None:
    """The pid from the service's pid file if that process still runs the service's program."""
    pid = read_pid_file(svc.pid_file(state_dir))
    return pid if pid is not None and _runs(pid, svc.binary) else None


def stop_recorded(svc: Service, state_dir: Path, timeout: float = 30.0) -> str:
    """Stop the process recorded in the service's pid file; returns what happened.

    SIGTERM, wait up to ``timeout``, then SIGKILL. A pid that no longer runs the service's
    program is never signalled, and its pid file is left in place for a person to look at
    (the next ``up`` overwrites it).
    """
    pid_file = svc.pid_file(state_dir)
    pid = read_pid_file(pid_file)
    if pid is None:
        if pid_file.exists():
            pid_file.unlink()
            return "unreadable pid file removed"
        return "not started by kernlet"
    if not _alive(pid):
        pid_file.unlink()
        return f"pid {pid} had already exited; pid file removed"
    if not _runs(pid, svc.binary):
        shown = " ".join(_cmdline(pid))[:60] or "?"
        return f"refused: pid {pid} runs {shown!r}, not {svc.binary}; not signalled"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    how = "stopped"
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        how = f"killed (no exit within {timeout:.0f}s of SIGTERM)"
        while _alive(pid):
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    return f"{how} (pid {pid})"


# --- up, down, status -----------------------------------------------------------------------


def _start(svc: Service, state_dir: Path) -> subprocess.Popen[bytes]:
    (state_dir / svc.name).mkdir(parents=True, exist_ok=True)
    argv = svc.argv(state_dir)
    if _which(argv[0]) is None:
        raise HalfstackError(f"{svc.name}: {svc.binary} not found (package {svc.package})")
    log_file = svc.log_file(state_dir)
    with log_file.open("ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} kernlet starts: {argv}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state_dir / svc.name,
            start_new_session=True,  # outlives `kernlet halfstack up`, immune to its ^C
        )
    svc.pid_file(state_dir).write_text(f"{proc.pid}\n")
    return proc


def _wait(
    svc: Service, state_dir: Path, proc: subprocess.Popen[bytes] | None, pid: int, timeout: float
) -> Probe:
    deadline = time.monotonic() + timeout
    while True:
        probe = svc.probe()
        if probe.answering:
            return probe
        exited = proc.poll() is not None if proc is not None else not _alive(pid)
        if exited:
            code = f" with code {proc.returncode}" if proc is not None else ""
            svc.pid_file(state_dir).unlink(missing_ok=True)
            raise HalfstackError(
                f"{svc.name} exited{code} before answering ({probe.detail}); "
                f"see its log {svc.log_file(state_dir)}"
            )
        if time.monotonic() >= deadline:
            raise HalfstackError(
                f"{svc.name} (pid {pid}) did not answer within {timeout:.0f}s "
                f"({probe.detail}); see its log {svc.log_file(state_dir)}"
            )
        time.sleep(0.2)


def _result(svc: Service, state: Path, probe: Probe, pid: int | None, note: str) -> ServiceStatus:
    log = svc.log_file(state) if pid is not None else None
    return ServiceStatus(svc.name, svc.endpoint, probe.answering, pid, note, probe.detail, log)


_EXTERNAL = "already running (not started by kernlet)"


def up(
    state_dir: Path | str | None = None,
    services: Sequence[Service] = SERVICES,
    timeout: float | None = None,
    install: bool = True,
    say: Callable[[str], None] = lambda _msg: None,
) -> list[ServiceStatus]:
    """Install what is missing, start what does not answer, wait until all answer.

    Idempotent: a service that already answers is left alone. Raises ``HalfstackError``
    naming the service and its log file when one cannot be started in time; the services
    already started stay up (``down`` stops them).
    """
    state = resolve_state_dir(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    if install:
        ensure_installed(state / "apt.log", services, say=say)
    results: dict[str, ServiceStatus] = {}
    waiting: list[tuple[Service, subprocess.Popen[bytes] | None, int]] = []
    for svc in services:  # start all first, then wait: they come up side by side
        pid = _recorded_pid(svc, state)
        probe = svc.probe()
        if probe.answering:
            who = "running (started by kernlet)" if pid else _EXTERNAL
            results[svc.name] = _result(svc, state, probe, pid, who)
        elif pid is not None:
            say(f"{svc.name}: pid {pid} (started earlier) does not answer yet; waiting for it")
            waiting.append((svc, None, pid))
        else:
            say(f"starting {svc.name}")
            started = _start(svc, state)
            waiting.append((svc, started, started.pid))
    for svc, proc, pid in waiting:
        probe = _wait(svc, state, proc, pid, timeout or svc.start_timeout)
        who = "started by kernlet" if proc else "running (started by kernlet)"
        results[svc.name] = _result(svc, state, probe, pid, who)
    return [results[svc.name] for svc in services]


def down(
    state_dir: Path | str | None = None,
    services: Sequence[Service] = SERVICES,
    timeout: float = 30.0,
) -> list[ServiceStatus]:
    """Stop what ``up`` started (and nothing else), in reverse order of starting."""
    state = resolve_state_dir(state_dir)
    results: dict[str, ServiceStatus] = {}
    for svc in reversed(services):
        pid = read_pid_file(svc.pid_file(state))
        note = stop_recorded(svc, state, timeout)
        results[svc.name] = _result(svc, state, svc.probe(), pid, note)
    return [results[svc.name] for svc in services]


def status(
    state_dir: Path | str | None = None, services: Sequence[Service] = SERVICES
) -> list[ServiceStatus]:
    """Probe each service, and say whether kernlet started it."""
    state = resolve_state_dir(state_dir)
    results = []
    for svc in services:
        pid = _recorded_pid(svc, state)
        probe = svc.probe()
        if pid is not None:
            who = "started by kernlet"
        else:
            who = "not started by kernlet" if probe.answering else "not running"
        results.append(_result(svc, state, probe, pid, who))
    return results
