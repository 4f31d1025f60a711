"""``kernlet demo``: the end-to-end demo (agent, kernel, output, plot, destroy)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kernlet.cli import main


@main.command("demo")
@click.option("--image", default="kernlet/python:3.11", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo-output"), show_default=True, help="where the PNG goes")
def demo(image: str, out_dir: Path) -> None:
    """Start an agent, run Python that prints and plots in a new kernel, save the plot as
    a PNG file, destroy the kernel. Needs `kernlet halfstack up` and the image."""
    from kernlet.demo import run_demo

    sys.exit(run_demo(image, out_dir))
