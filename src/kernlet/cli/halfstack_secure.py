"""``kernlet halfstack secure-nats up|down|status``: a TLS nats-server with per-agent accounts."""

from __future__ import annotations

import json
from pathlib import Path

import click

from kernlet import halfstack as hs
from kernlet.cli.halfstack import _console, _say, _state_dir_option, _table, halfstack
from kernlet.halfstack import secure_nats as sn


def _setup(state_dir: Path, port: int, monitor_port: int) -> sn.SecureNats:
    return sn.SecureNats(hs.resolve_state_dir(state_dir) / sn.NAME, port, monitor_port)


_port_option = click.option("--port", type=click.IntRange(1, 65535),
                            default=sn.SECURE_NATS_PORT, show_default=True,
                            help="Client port (TLS) on 127.0.0.1.")
_monitor_option = click.option("--monitor-port", type=click.IntRange(1, 65535),
                               default=sn.SECURE_NATS_MONITOR_PORT, show_default=True,
                               help="HTTP monitoring port on 127.0.0.1.")


@halfstack.group("secure-nats")
def secure_nats() -> None:
    """A second nats-server: TLS, one account per agent and a manager, with the subject
    permissions of docs/protocol.md (docs/security.md). For trying kernlet's NATS security."""


@secure_nats.command("up")
@_state_dir_option
@click.option("--agent", "agents", multiple=True, required=True, metavar="ID",
              help="An agent id to make an account for (repeatable).")
@click.option("--mtls", is_flag=True, help="Every client must show a certificate of the CA.")
@_port_option
@_monitor_option
@click.option("--subject-prefix", default="kernlet", show_default=True,
              help="The agents' nats.subject-prefix.")
@click.option("--stream", default="KERNLET_EVENTS", show_default=True,
              help="The agents' nats.stream-name.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait until it answers.")
def up(state_dir: Path, agents: tuple[str, ...], mtls: bool, port: int, monitor_port: int,
       subject_prefix: str, stream: str, timeout: float) -> None:
    """Make the CA, certificates and accounts, then start the server (pid file, log).

    Already running: left alone (run `down` first to change the accounts)."""
    setup = _setup(state_dir, port, monitor_port)
    svc = setup.service()
    state = hs.resolve_state_dir(state_dir)
    if not hs.status(state, [svc])[0].answering:
        sn.prepare(state, agents, mtls=mtls, port=port, monitor_port=monitor_port,
                   prefix=subject_prefix, stream=stream)
    try:
        rows = hs.up(state, [svc], timeout=timeout, install=False, say=_say)
    except hs.HalfstackError as exc:
        raise click.ClickException(str(exc)) from exc
    _console.print(_table(f"secure nats (state: {setup.root})", rows))
    for agent in agents:
        where = setup.agent_file(agent)
        if where.exists():
            _console.print(f"agent {agent}: its [nats] section is in {where}")
    _console.print(f"manager: {json.dumps(str(setup.manager_file))} (url, user, password, "
                   "tls files)")


@secure_nats.command("down")
@_state_dir_option
@_port_option
@_monitor_option
def down(state_dir: Path, port: int, monitor_port: int) -> None:
    """Stop the secure nats-server that `up` started (by its pid), and nothing else."""
    setup = _setup(state_dir, port, monitor_port)
    rows = hs.down(hs.resolve_state_dir(state_dir), [setup.service()])
    _console.print(_table(f"secure nats down (state: {setup.root})", rows))


@secure_nats.command("status")
@_state_dir_option
@_port_option
@_monitor_option
def status(state_dir: Path, port: int, monitor_port: int) -> None:
    """Probe it; exit 1 when it does not answer."""
    setup = _setup(state_dir, port, monitor_port)
    rows = hs.status(hs.resolve_state_dir(state_dir), [setup.service()])
    _console.print(_table(f"secure nats status (state: {setup.root})", rows))
    if not rows[0].answering:
        raise SystemExit(1)
