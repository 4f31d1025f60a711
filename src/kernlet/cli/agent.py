"""``kernlet agent``: run the agent in the foreground until SIGTERM or SIGINT; ``kernlet agent
ping|info``: ask a running agent over NATS."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from kernlet.cli import main
from kernlet.cli._out import emit, table
from kernlet.cli._remote import EXIT_CODES_HELP, Target, connection_options, go
from kernlet.client import KernletClient
from kernlet.logs import LEVELS


@main.group("agent", invoke_without_command=True, epilog=EXIT_CODES_HELP)
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="agent.toml (default: ./agent.toml, "
              "~/.config/kernlet/agent.toml, /etc/kernlet/agent.toml, first found)")
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default=None,
              help="log at this level (default: [logging] level in the configuration)")
@click.option("--debug", is_flag=True, help="the same as --log-level debug")
@click.pass_context
def agent(ctx: click.Context, config: Path | None, log_level: str | None, debug: bool) -> None:
    """Run the agent (no subcommand): SIGTERM/SIGINT stop it and leave kernels running.
    With a subcommand, ask a running agent instead."""
    if ctx.invoked_subcommand is not None:
        return
    from kernlet.agent import run_agent

    sys.exit(run_agent(config, "debug" if debug else log_level))


@agent.command("ping")
@connection_options
@click.option("--json", "as_json", is_flag=True,
              help="print {agent_id, version, msg, rtt_ms} as JSON")
def ping(target: Target, as_json: bool) -> None:
    """Ask the agent whether it answers; prints its id, version and the round trip."""

    async def body(c: KernletClient) -> dict[str, Any]:
        started = time.perf_counter()
        res = await c.ping("kernlet-cli")
        return {**res, "rtt_ms": round((time.perf_counter() - started) * 1000, 2)}

    res = go(target, body)
    emit(as_json, res, f"{res['agent_id']} answers: kernlet {res['version']}, "
                       f"{res['rtt_ms']} ms")


@agent.command("info")
@connection_options
@click.option("--json", "as_json", is_flag=True,
              help="print {agent_id, version, plugins, slots} as JSON")
def info(target: Target, as_json: bool) -> None:
    """The agent's version, detected hardware (per resource plugin) and its slots: capacity,
    used and free."""

    async def body(c: KernletClient) -> dict[str, Any]:
        res = await c.ping()
        hw = await c.gather_hwinfo()
        return {"agent_id": res["agent_id"], "version": res["version"], **hw}

    res = go(target, body)
    if as_json:
        emit(True, res, "")
        return
    click.echo(f"agent {res['agent_id']}, kernlet {res['version']}")
    table(["SLOT", "TYPE", "CAPACITY", "USED", "FREE"],
          [[name, s.get("type"), s.get("capacity"), s.get("used"), s.get("free")]
           for name, s in sorted(res["slots"].items())], title="slots")
    rows = []
    for key, plugin in sorted(res["plugins"].items()):
        facts = {k: v for k, v in plugin.items() if k != "slots"}
        devices = sum(len(s.get("devices", {})) for s in plugin.get("slots", {}).values())
        rows.append([key, ", ".join(sorted(plugin.get("slots", {}))), devices,
                     ", ".join(f"{k}={v}" for k, v in sorted(facts.items()))])
    table(["PLUGIN", "SLOTS", "DEVICES", "FACTS"], rows, title="hardware")
