"""``kernlet halfstack up|down|status``: the real services kernlet needs, on loopback."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from kernlet import halfstack as hs
from kernlet.cli import main

_console = Console()
if not _console.is_terminal:  # CI logs: rich would wrap the table at 80 columns
    _console = Console(width=max(_console.width, 130))
_err = Console(stderr=True)

_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="KERNLET_HALFSTACK_DIR",
    default=hs.DEFAULT_STATE_DIR,
    show_default=True,
    help="Pid files, logs and data of the services kernlet starts (env KERNLET_HALFSTACK_DIR).",
)


def _table(title: str, rows: Sequence[hs.ServiceStatus]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("service", style="bold")
    table.add_column("endpoint")
    table.add_column("answering")
    table.add_column("kernlet pid")
    table.add_column("state")
    table.add_column("detail")
    for row in rows:
        answering = "[green]yes[/]" if row.answering else "[red]no[/]"
        pid = str(row.pid) if row.pid is not None else "-"
        table.add_row(row.name, row.endpoint, answering, pid, row.note, row.detail)
    logs = sorted({str(row.log_file.parent) for row in rows if row.log_file is not None})
    if logs:
        table.caption = f"logs: {', '.join(logs)}/<service>.log"
        table.caption_justify = "left"
    return table


def _say(message: str) -> None:
    _err.print(f"[dim]halfstack:[/] {message}")


@main.group()
def halfstack() -> None:
    """Docker, NATS (JetStream), etcd, Redis and a registry on loopback, from Debian packages."""


@halfstack.command()
@_state_dir_option
@click.option("--timeout", type=float, default=None, help="Seconds to wait for each service.")
@click.option("--no-install", is_flag=True, help="Do not apt-get install missing packages.")
def up(state_dir: Path, timeout: float | None, no_install: bool) -> None:
    """Install what is missing, start what does not answer, wait until all answer."""
    try:
        rows = hs.up(state_dir, timeout=timeout, install=not no_install, say=_say)
    except hs.HalfstackError as exc:
        raise click.ClickException(str(exc)) from exc
    _console.print(_table(f"halfstack up (state: {state_dir})", rows))


@halfstack.command()
@_state_dir_option
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds SIGTERM to SIGKILL."
)
def down(state_dir: Path, timeout: float) -> None:
    """Stop the services that `up` started (recorded in pid files), and nothing else."""
    rows = hs.down(state_dir, timeout=timeout)
    _console.print(_table(f"halfstack down (state: {state_dir})", rows))


@halfstack.command()
@_state_dir_option
def status(state_dir: Path) -> None:
    """Probe each service; exit 1 when one does not answer."""
    rows = hs.status(state_dir)
    _console.print(_table(f"halfstack status (state: {state_dir})", rows))
    if not all(row.answering for row in rows):
        raise SystemExit(1)
