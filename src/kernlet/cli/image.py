"""``kernlet image build python`` and ``kernlet image ls``: kernel images, built locally."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from kernlet import images
from kernlet.cli import main

_console = Console()


@main.group()
def image() -> None:
    """Kernel images: built from Debian packages with mmdebstrap and docker import."""


@image.command()
@click.argument("kind", type=click.Choice(["python"]))
@click.option("--tag", default=images.DEFAULT_PYTHON_TAG, show_default=True)
@click.option("--rebuild", is_flag=True, help="Build even if an image with that tag exists.")
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the build log goes [default: /var/lib/kernlet/images/build-python.log].",
)
def build(kind: str, tag: str, rebuild: bool, log_file: Path | None) -> None:
    """Build the KIND kernel image (only "python" for now), or reuse the existing one."""
    started = time.monotonic()
    phases: list[tuple[str, float]] = []  # (name, start time), in order

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TimeElapsedColumn(),
        TextColumn("[dim]{task.fields[line]}"),
        console=_console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{tag}: checking", total=None, line="")

        def end_phase() -> None:
            if phases:
                name, since = phases[-1]
                progress.console.print(f"  {name}: done in {time.monotonic() - since:.1f}s")

        def on_phase(name: str) -> None:
            if not phases:
                log = log_file or images.build_log_path()
                progress.console.print(f"building {tag}; log: {log}")
            end_phase()
            phases.append((name, time.monotonic()))
            progress.update(task, description=f"{tag}: {name}", line="")

        def on_log(line: str) -> None:
            progress.update(task, line=line[:60])

        try:
            image_id = images.ensure_python_image(
                tag, rebuild, on_phase=on_phase, on_log=on_log, log_file=log_file
            )
        except images.ImageError as exc:
            raise click.ClickException(str(exc)) from exc
        end_phase()
    short = image_id.removeprefix("sha256:")[:12]
    if phases:
        _console.print(f"built {tag} ({short}) in {time.monotonic() - started:.1f}s")
    else:
        _console.print(f"{tag} ({short}) exists; --rebuild builds it again")


@image.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one list of objects).")
def ls(as_json: bool) -> None:
    """List kernlet's images (those labelled ai.kernlet.kernelspec)."""
    try:
        found = images.list_images()
    except images.ImageError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    table = Table(title_justify="left")
    for column in ("tags", "id", "created", "size", "runtime path", "features"):
        table.add_column(column)
    for item in found:
        labels = item["labels"]
        table.add_row(
            ", ".join(item["tags"]) or "<untagged>",
            item["id"].removeprefix("sha256:")[:12],
            item["created"][:19].replace("T", " "),
            f"{item['size'] / 1e6:.0f} MB",
            labels.get("ai.kernlet.runtime-path", "?"),
            labels.get("ai.kernlet.features", ""),
        )
    _console.print(table)
