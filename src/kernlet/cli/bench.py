"""``kernlet bench``: kernlet's figures against their floors, measured in one run.

The benchmarks live in ``bench/`` beside ``src/`` in kernlet's source checkout (they are not
installed); this command finds them there. See docs/performance.md.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from types import ModuleType

import click

import kernlet
from kernlet.cli import main

FIGURES = ("eventlog", "create", "concurrent", "exec", "output", "fleet", "density", "pool")


def load_bench() -> ModuleType:
    """The ``bench.run`` module of the source checkout this kernlet was installed from."""
    root = Path(kernlet.__file__).resolve().parents[2]
    if not (root / "bench" / "run.py").is_file():
        raise click.ClickException(
            f"kernlet bench needs kernlet's source checkout (no bench/ in {root}); "
            "install kernlet editable from a checkout (pip install -e .)"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("bench.run")


@main.command("bench")
@click.option("--quick", is_flag=True, help="a short pass (about 2 minutes instead of 10)")
@click.option("--image", default="kernlet/python:3.11", show_default=True)
@click.option("--nats", "nats_url", default="nats://127.0.0.1:4222", show_default=True)
@click.option("--only", multiple=True, type=click.Choice(FIGURES),
              help="run only these figures (repeatable)")
@click.option("--profile", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="record the agent with py-spy during the kernlet side of the figures "
                   "and write a summary per figure into this directory (needs py-spy)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the table here")
def bench(quick: bool, image: str, nats_url: str, only: tuple[str, ...],
          profile: Path | None, out: Path | None) -> None:
    """Measure kernlet against the floor of each figure and print one markdown table.

    Needs root, the halfstack (`kernlet halfstack up`) and the image. Starts its own agents
    (ids bench-<hex>) and removes every container and process it made, also on Ctrl-C.
    """
    run = load_bench()
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    try:
        table = run.run(image, nats_url, quick, only, profile)
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("kernlet bench: interrupted (its agents and containers are gone)", err=True)
        sys.exit(130)
    click.echo(table)
    if out is not None:
        out.write_text(table + "\n")
