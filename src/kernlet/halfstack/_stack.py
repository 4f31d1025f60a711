"""``up``, ``down`` and ``status``: the steps of the other modules, in order, for all services."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from kernlet.halfstack._install import ensure_installed
from kernlet.halfstack._probes import Probe
from kernlet.halfstack._processes import (
    read_pid_file,
    recorded_pid,
    start,
    stop_recorded,
    wait_answering,
)
from kernlet.halfstack._services import SERVICES, Service, ServiceStatus, resolve_state_dir

_EXTERNAL = "already running (not started by kernlet)"


def _result(svc: Service, state: Path, probe: Probe, pid: int | None, note: str) -> ServiceStatus:
    log = svc.log_file(state) if pid is not None else None
    return ServiceStatus(svc.name, svc.endpoint, probe.answering, pid, note, probe.detail, log)


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
        pid = recorded_pid(svc, state)
        probe = svc.probe()
        if probe.answering:
            who = "running (started by kernlet)" if pid else _EXTERNAL
            results[svc.name] = _result(svc, state, probe, pid, who)
        elif pid is not None:
            say(f"{svc.name}: pid {pid} (started earlier) does not answer yet; waiting for it")
            waiting.append((svc, None, pid))
        else:
            say(f"starting {svc.name}")
            started = start(svc, state)
            waiting.append((svc, started, started.pid))
    for svc, proc, pid in waiting:
        probe = wait_answering(svc, state, proc, pid, timeout or svc.start_timeout)
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
        pid = recorded_pid(svc, state)
        probe = svc.probe()
        if pid is not None:
            who = "started by kernlet"
        else:
            who = "not started by kernlet" if probe.answering else "not running"
        results.append(_result(svc, state, probe, pid, who))
    return results
