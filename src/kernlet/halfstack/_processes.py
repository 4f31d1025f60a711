"""The processes kernlet starts: pid files, start, wait until answering, and stop.

A pid is trusted only while ``/proc/PID/cmdline`` still shows the service's program, so a pid
file left behind after a reboot (its pid now someone else's) never gets a signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from kernlet.halfstack._probes import Probe
from kernlet.halfstack._services import HalfstackError, Service, which


def read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Whether any thread of process ``pid`` still runs; a zombie counts as gone.

    All threads count, not only the main one: when a threaded program exits (dockerd on
    SIGTERM, or python's http.server with a request thread), its main thread may be a zombie
    while the others are still exiting and still hold the process's files, its listening
    sockets among them. ``/proc/PID/stat`` gives the main thread's state and the number of
    threads not yet gone (the zombie main thread among them) in one read.
    """
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()  # fields 3 (state) onwards; 20 is num_threads
    return fields[0] not in ("Z", "X") or int(fields[17]) > 1


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


def recorded_pid(svc: Service, state_dir: Path) -> int | None:
    """The pid from the service's pid file if that process still runs the service's program."""
    pid = read_pid_file(svc.pid_file(state_dir))
    return pid if pid is not None and _runs(pid, svc.binary) else None


def _wait_gone(pid: int, timeout: float | None = None) -> bool:
    """Wait until ``pid`` has exited, at most ``timeout`` seconds (``None``: however long it
    takes). Returns whether it has."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while _alive(pid):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


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
    how = "stopped"
    if not _wait_gone(pid, timeout):
        os.kill(pid, signal.SIGKILL)
        how = f"killed (no exit within {timeout:.0f}s of SIGTERM)"
        _wait_gone(pid)
    pid_file.unlink(missing_ok=True)
    return f"{how} (pid {pid})"


def start(svc: Service, state_dir: Path) -> subprocess.Popen[bytes]:
    """Start the service in its own session, output to its log file, pid to its pid file."""
    (state_dir / svc.name).mkdir(parents=True, exist_ok=True)
    argv = svc.argv(state_dir)
    if which(argv[0]) is None:
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


def wait_answering(
    svc: Service, state_dir: Path, proc: subprocess.Popen[bytes] | None, pid: int, timeout: float
) -> Probe:
    """Probe until the service answers; ``HalfstackError`` (naming its log) if its process
    exits first or ``timeout`` passes. ``proc`` is ``None`` for a process started earlier."""
    deadline = time.monotonic() + timeout
    while not (probe := svc.probe()).answering:
        exited = proc.poll() is not None if proc is not None else not _alive(pid)
        if exited:
            code = f" with code {proc.returncode}" if proc is not None else ""
            svc.pid_file(state_dir).unlink(missing_ok=True)
            raise _not_answering(svc, state_dir, f"exited{code} before answering", probe)
        if time.monotonic() >= deadline:
            raise _not_answering(
                svc, state_dir, f"(pid {pid}) did not answer within {timeout:.0f}s", probe
            )
        time.sleep(0.2)
    return probe


def _not_answering(svc: Service, state_dir: Path, what: str, probe: Probe) -> HalfstackError:
    return HalfstackError(
        f"{svc.name} {what} ({probe.detail}); see its log {svc.log_file(state_dir)}"
    )
