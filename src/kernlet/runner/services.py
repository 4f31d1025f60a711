"""In-container services: the image label that declares them and the commands that run them.

An image declares its services in the label ``ai.kernlet.service-ports``: comma-separated
``name:protocol:container_port`` entries, e.g. ``jupyter:http:8888,terminal:http:7681``.
:func:`parse_service_ports` reads it and refuses anything doubtful (a bad name, an unknown
protocol, a port out of range, a name or a port given twice) with a ValueError that says which
entry is wrong: the reference agent broke kernel start on duplicate service ports, kernlet
refuses such an image at create time instead.

How each service is started lives in ``services.json`` next to this file
(:func:`load_service_defs`); the agent publishes each declared port on 127.0.0.1, runs the
command inside the container (:func:`launch_argv`), waits for :meth:`ServiceDef.ready_url`,
hands out :meth:`ServiceDef.user_url`, and stops it with :func:`stop_argv`. See
docs/services.md.

Standard library only: the agent imports this, and nothing here may need the image.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernlet.layout import IPC_IN_CONTAINER

__all__ = [
    "DEFS_PATH",
    "IPC_DIR",
    "NAME_RE",
    "PROTOCOLS",
    "ServiceDef",
    "ServicePort",
    "launch_argv",
    "load_service_defs",
    "log_file",
    "new_token",
    "parse_service_ports",
    "pid_file",
    "stop_argv",
]

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
#: http: the agent can probe it and hand out a URL; tcp: a plain port (e.g. sshd)
PROTOCOLS = frozenset({"http", "tcp"})
#: A kernel runs as uid 1000 without capabilities: it cannot count on binding below 1024.
MIN_PORT, MAX_PORT = 1024, 65535
DEFS_PATH = Path(__file__).with_name("services.json")
IPC_DIR = IPC_IN_CONTAINER  # the kernel's rw runtime dir, as seen inside the container
PLACEHOLDERS = ("port", "token", "workdir")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One entry of the image label: service ``name`` speaks ``protocol`` on ``port``."""

    name: str
    protocol: str
    port: int

    def __str__(self) -> str:
        return f"{self.name}:{self.protocol}:{self.port}"


def parse_service_ports(label: str) -> list[ServicePort]:
    """The services an image declares, in label order; ValueError naming the bad entry.

    An empty (or blank) label declares none. Spaces around entries are ignored; an empty
    entry (``a:http:1,,b:http:2`` or a trailing comma) is an error, as is a repeated name or a
    repeated port.
    """
    if not label.strip():
        return []
    found: list[ServicePort] = []
    names: dict[str, str] = {}
    ports: dict[int, str] = {}
    for index, raw in enumerate(label.split(","), 1):
        entry = raw.strip()
        where = f"service-ports entry {index} ({entry!r})"
        if not entry:
            raise ValueError(f"service-ports entry {index} is empty in {label!r}")
        parts = entry.split(":")
        if len(parts) != 3:
            raise ValueError(f"{where}: expected name:protocol:port")
        name, protocol, port_text = (part.strip() for part in parts)
        if not NAME_RE.match(name):
            raise ValueError(
                f"{where}: bad name {name!r} (lower-case letter, then up to 31 of a-z 0-9 -)"
            )
        if protocol not in PROTOCOLS:
            raise ValueError(
                f"{where}: unknown protocol {protocol!r} (one of {', '.join(sorted(PROTOCOLS))})"
            )
        if not (port_text.isascii() and port_text.isdigit()):
            raise ValueError(f"{where}: port {port_text!r} is not a number")
        port = int(port_text)
        if not MIN_PORT <= port <= MAX_PORT:
            raise ValueError(
                f"{where}: port {port} is outside {MIN_PORT}-{MAX_PORT} (kernels run without"
                " privileges)"
            )
        if name in names:
            raise ValueError(f"{where}: duplicate service name {name!r} (also {names[name]!r})")
        if port in ports:
            raise ValueError(f"{where}: duplicate port {port} (also used by {ports[port]!r})")
        names[name] = entry
        ports[port] = entry
        found.append(ServicePort(name, protocol, port))
    return found


@dataclass(frozen=True, slots=True)
class ServiceDef:
    """How to run one service; strings may hold ``{port}``, ``{token}`` and ``{workdir}``.

    ``command`` runs inside the container (the agent adds nothing but :func:`launch_argv`'s
    pid file); ``env`` is added to the container's environment for that command (the token
    travels there rather than in argv, which every user on the host can read in /proc);
    ``ready_path`` answers with a status below 500 once the service is up; ``url_path`` is what
    the user opens; ``needs`` names what the image must have (documentation only).
    """

    name: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    ready_path: str
    url_path: str
    needs: str
    description: str = ""

    def argv(self, *, port: int, token: str, workdir: str) -> list[str]:
        """The command with its placeholders filled in."""
        return [_fill(arg, port, token, workdir) for arg in self.command]

    def environ(self, *, port: int, token: str, workdir: str) -> dict[str, str]:
        """The variables to add to the container's environment for the command."""
        return {key: _fill(value, port, token, workdir) for key, value in self.env}

    def ready_url(self, host_port: int, token: str, host: str = "127.0.0.1") -> str:
        """What the agent probes: ``ready_path`` with the token as a query parameter."""
        sep = "&" if "?" in self.ready_path else "?"
        return f"http://{host}:{host_port}{self.ready_path}{sep}token={token}"

    def user_url(self, host_port: int, token: str, host: str = "127.0.0.1") -> str:
        """What the user opens: ``url_path`` with the token filled in."""
        return f"http://{host}:{host_port}{_fill(self.url_path, host_port, token, '')}"


def _fill(text: str, port: int, token: str, workdir: str) -> str:
    values = {"port": str(port), "token": token, "workdir": workdir}
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], text)


def _check_placeholders(where: str, text: str) -> None:
    for match in _PLACEHOLDER_RE.finditer(text):
        if match.group(1) not in PLACEHOLDERS:
            raise ValueError(
                f"{where}: unknown placeholder {match.group(0)} (use {{port}}, {{token}},"
                " {workdir})"
            )


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a non-empty list of strings")
    return tuple(value)


def _def_from(name: str, raw: Any) -> ServiceDef:
    where = f"services.json: {name!r}"
    if not NAME_RE.match(name):
        raise ValueError(f"{where}: bad service name")
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = set(raw) - {"command", "env", "ready_path", "url_path", "needs", "description"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    command = _strings(f"{where}.command", raw.get("command"))
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ValueError(f"{where}.env: expected an object of strings")
    texts: dict[str, str] = {}
    for key in ("ready_path", "url_path", "needs"):
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}.{key}: expected a non-empty string")
        texts[key] = value
    for key in ("ready_path", "url_path"):
        if not texts[key].startswith("/"):
            raise ValueError(f"{where}.{key}: must start with /")
    if "{" in texts["ready_path"]:
        raise ValueError(f"{where}.ready_path: no placeholders (the token is added as a query)")
    for i, arg in enumerate(command):
        _check_placeholders(f"{where}.command[{i}]", arg)
    for key, value in env.items():
        _check_placeholders(f"{where}.env.{key}", value)
    _check_placeholders(f"{where}.url_path", texts["url_path"])
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"{where}.description: expected a string")
    return ServiceDef(
        name=name,
        command=command,
        env=tuple(sorted(env.items())),
        ready_path=texts["ready_path"],
        url_path=texts["url_path"],
        needs=texts["needs"],
        description=description,
    )


def load_service_defs(path: Path | None = None) -> dict[str, ServiceDef]:
    """The service definitions (default: ``services.json`` beside this module), by name."""
    source = path or DEFS_PATH
    raw = json.loads(source.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected an object of services")
    return {name: _def_from(name, value) for name, value in raw.items()}


def new_token() -> str:
    """A fresh service token: 43 URL-safe characters, fine in a URL, argv and a cookie."""
    return secrets.token_urlsafe(32)


def pid_file(name: str, ipc_dir: str = IPC_DIR) -> str:
    """Where a running service's pid (in the container's pid namespace) is written."""
    _check_name(name)
    return f"{ipc_dir}/svc-{name}.pid"


def log_file(name: str, ipc_dir: str = IPC_DIR) -> str:
    """Where a service's stdout and stderr go (truncated at each start)."""
    _check_name(name)
    return f"{ipc_dir}/svc-{name}.log"


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ValueError(f"bad service name {name!r}")


def launch_argv(name: str, argv: list[str], ipc_dir: str = IPC_DIR) -> list[str]:
    """What to ``docker exec`` (detached) to run ``argv`` as service ``name``.

    A shell writes its pid to :func:`pid_file` and then becomes the service, with its output
    in :func:`log_file`. ``argv`` is passed as arguments, never pasted into the shell text.
    """
    script = f'echo $$ > {pid_file(name, ipc_dir)}; exec "$@" > {log_file(name, ipc_dir)} 2>&1'
    return ["/bin/sh", "-c", script, f"svc-{name}", *argv]


def stop_argv(name: str, grace: float = 5.0, ipc_dir: str = IPC_DIR) -> list[str]:
    """What to ``docker exec`` (attached) to stop service ``name``.

    SIGTERM to the pid in :func:`pid_file`, SIGKILL after ``grace`` seconds, then the pid file
    is removed. Exit status 0: it was running and has stopped; 3: it was not running.
    """
    pidf = pid_file(name, ipc_dir)
    ticks = max(1, int(grace * 10))
    script = (
        f"[ -f {pidf} ] || exit 3; pid=$(cat {pidf}); rm -f {pidf}; "
        'case "$pid" in ""|*[!0-9]*) exit 3;; esac; '
        'kill -TERM "$pid" 2>/dev/null || exit 3; '
        f'i=0; while kill -0 "$pid" 2>/dev/null; do i=$((i+1)); '
        f'if [ $i -ge {ticks} ]; then kill -KILL "$pid" 2>/dev/null; exit 0; fi; '
        "sleep 0.1; done; exit 0"
    )
    return ["/bin/sh", "-c", script]
