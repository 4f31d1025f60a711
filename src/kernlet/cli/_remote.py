"""What every CLI verb that talks to an agent shares: the connection options, the exit codes,
and :func:`go`, which runs one client coroutine and turns each failure into one line on
stderr and its documented exit code (never a traceback).

Exit codes (sysexits.h where one fits; see docs/cli.md)::

    0    done (kernel exec: the code's own exit code, 0 or 1 in query mode)
    2    bad command line (click)
    65   the agent refused the request (InvalidRequest, UnknownCommand, KernelAlreadyExists,
         KernelNotRunning, ImageInUse)                                        EX_DATAERR
    66   no such kernel, image or file (KernelNotFound, ImageNotFound, a local file)
                                                                              EX_NOINPUT
    69   NATS unreachable, or no agent serves that id (AgentUnavailable)      EX_UNAVAILABLE
    70   the agent failed inside (InternalError, an unknown error)            EX_SOFTWARE
    73   the kernel could not be created (CreationFailed, InsufficientResource) EX_CANTCREAT
    74   an outside service failed (DriverError: Docker, etcd, Redis, NATS, the runtime;
         or writing a local file)                                             EX_IOERR
    75   no reply within --timeout (AgentTimeout)                             EX_TEMPFAIL
    124  kernel exec --run-timeout passed; the agent interrupted the run
    130  Ctrl-C (kernel exec: the run was interrupted, or a second Ctrl-C detached)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import click

from kernlet.client import KernletClient
from kernlet.config import ConfigError, load_config
from kernlet.errors import (
    AgentTimeout,
    AgentUnavailable,
    CreationFailed,
    DriverError,
    ImageInUse,
    ImageNotFound,
    InsufficientResource,
    InvalidRequest,
    KernelAlreadyExists,
    KernelNotFound,
    KernelNotRunning,
    KernletError,
    UnknownCommand,
)

__all__ = ["EXIT_CODES_HELP", "Target", "connection_options", "exit_code_for", "fail", "go"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

EX_DATAERR, EX_NOINPUT, EX_UNAVAILABLE, EX_SOFTWARE = 65, 66, 69, 70
EX_CANTCREAT, EX_IOERR, EX_TEMPFAIL = 73, 74, 75
RUN_TIMEOUT, INTERRUPTED = 124, 130

_CODES: list[tuple[tuple[type[KernletError], ...], int]] = [
    ((InvalidRequest, UnknownCommand, KernelAlreadyExists, KernelNotRunning, ImageInUse),
     EX_DATAERR),
    ((KernelNotFound, ImageNotFound), EX_NOINPUT),
    ((AgentUnavailable,), EX_UNAVAILABLE),
    ((CreationFailed, InsufficientResource), EX_CANTCREAT),
    ((DriverError,), EX_IOERR),
    ((AgentTimeout,), EX_TEMPFAIL),
]

EXIT_CODES_HELP = """\b
Exit codes (docs/cli.md):
  65  the agent refused the request     66  no such kernel, image or file
  69  NATS or the agent unreachable     70  internal error in the agent
  73  the kernel could not be created   74  an outside service failed
  75  no reply within --timeout         130 Ctrl-C
"""

#: seconds to wait for a TCP connection to NATS before saying it is unreachable
PREFLIGHT_TIMEOUT = 2.0


def exit_code_for(exc: KernletError) -> int:
    """The documented exit code of an error from the agent or the client."""
    for types, code in _CODES:
        if isinstance(exc, types):
            return code
    return EX_SOFTWARE


def fail(type_: str, message: str, code: int) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    click.echo(f"error: {type_}: {message}", err=True)
    sys.exit(code)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the CLI sends its requests."""

    nats: str
    agent_id: str
    prefix: str
    timeout: float

    def client(self) -> KernletClient:
        return KernletClient(self.nats, agent_id=self.agent_id, prefix=self.prefix,
                             timeout=self.timeout)


def connection_options(fn: F) -> F:
    """Add --config, --nats, --agent-id and --timeout to a group or command; the command
    gets ``target: Target`` (a group stores it in ``ctx.obj`` for its subcommands)."""

    @click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0,
                  show_default=True, envvar="KERNLET_TIMEOUT",
                  help="seconds to wait for each reply of the agent (exit 75 past it)")
    @click.option("--agent-id", envvar="KERNLET_AGENT_ID", default=None,
                  help="agent to talk to [default: agent.id of the config]")
    @click.option("--nats", envvar="KERNLET_NATS_URL", default=None,
                  help="NATS URL [default: nats.url of the config]")
    @click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="agent.toml to read the NATS address, subject prefix and agent id "
                  "from (default: ./agent.toml, ~/.config/kernlet/agent.toml, "
                  "/etc/kernlet/agent.toml, first found)")
    @functools.wraps(fn)
    def wrapper(*args: Any, config: Path | None, nats: str | None, agent_id: str | None,
                timeout: float, **kwargs: Any) -> Any:
        ctx = click.get_current_context(silent=True)
        if config is None and ctx is not None and ctx.parent is not None:
            config = ctx.parent.params.get("config")  # ``kernlet agent --config X ping``
        try:
            cfg = load_config(config)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        target = Target(nats or cfg.nats.url, agent_id or cfg.agent.id,
                        cfg.nats.subject_prefix, timeout)
        return fn(*args, target=target, **kwargs)

    return wrapper  # type: ignore[return-value]


def _quiet_nats() -> None:
    # nats-py logs every failed connect and reconnect with a traceback (its default error
    # callback); the CLI reports the one error that matters itself.
    logging.getLogger("nats").setLevel(logging.CRITICAL + 1)


def _endpoints(url: str) -> list[tuple[str, int]]:
    out = []
    for part in url.split(","):
        u = urlsplit(part.strip() if "://" in part else f"nats://{part.strip()}")
        if u.scheme in ("nats", "tls") and u.hostname:
            out.append((u.hostname, u.port or 4222))
    return out


def preflight(url: str, timeout: float = PREFLIGHT_TIMEOUT) -> None:
    """Raise AgentUnavailable at once when no NATS server of ``url`` accepts a TCP
    connection (nats-py would retry for several seconds first)."""
    errors = []
    for host, port in _endpoints(url):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc.strerror or exc}")
        else:
            return
    if errors:
        raise AgentUnavailable(f"cannot reach NATS at {url} ({'; '.join(errors)})")


def go(target: Target, fn: Callable[[KernletClient], Awaitable[T]]) -> T:
    """Connect, run ``fn``, close; a KernletError becomes one line and its exit code."""
    _quiet_nats()

    async def body() -> T:
        async with target.client() as c:
            return await fn(c)

    started = time.monotonic()
    try:
        preflight(target.nats)
        return asyncio.run(body())
    except KernletError as exc:
        fail(exc.type, exc.message, exit_code_for(exc))
    except KeyboardInterrupt:
        click.echo(f"interrupted after {time.monotonic() - started:.1f} s", err=True)
        sys.exit(INTERRUPTED)
