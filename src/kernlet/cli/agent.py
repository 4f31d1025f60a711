"""``kernlet agent``: run the agent in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kernlet.cli import main


@main.command("agent")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="agent.toml (default: ./agent.toml, "
              "~/.config/kernlet/agent.toml, /etc/kernlet/agent.toml, first found)")
@click.option("--debug", is_flag=True, help="log at debug level")
def agent(config: Path | None, debug: bool) -> None:
    """Run the agent. SIGTERM/SIGINT stop it and leave kernels running."""
    from kernlet.agent import run_agent

    sys.exit(run_agent(config, debug))
