"""``kernlet image build python`` and ``kernlet image ls``: kernel images, built and listed
locally; ``kernlet image pull | push | rm``: an agent pulls an image from its registry, pushes
one to a registry, removes images no live kernel runs (docs/images.md)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from kernlet import images
from kernlet.cli import main
from kernlet.cli._out import console, emit, json_line, table
from kernlet.cli._remote import Target, connection_options, exit_code_for, go
from kernlet.client import KernletClient
from kernlet.errors import error_from_wire

_console = Console()


@main.group()
def image() -> None:
    """Kernel images: built and listed here (build, ls), or pulled, pushed and removed by an
    agent (pull, push, rm)."""


@image.command()
@click.argument("kind", type=click.Choice(sorted(images.KINDS)), required=False)
@click.option("--tag", default=None,
              help="Image tag [default: the kind's, e.g. kernlet/python:3.11, kernlet/r:4.2].")
@click.option("--rebuild", is_flag=True, help="Build even if an image with that tag exists.")
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the build log goes [default: /var/lib/kernlet/images/build-KIND.log].",
)
def build(kind: str | None, tag: str | None, rebuild: bool, log_file: Path | None) -> None:
    """Build the KIND kernel image, or reuse the existing one; without KIND, list the kinds."""
    if kind is None:
        table(["kind", "default tag", "what"],
              [[k.name, k.default_tag, k.describe] for k in images.KINDS.values()])
        return
    tag = tag or images.KINDS[kind].default_tag
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
                log = log_file or images.build_log_path(kind)
                progress.console.print(f"building {tag}; log: {log}")
            end_phase()
            phases.append((name, time.monotonic()))
            progress.update(task, description=f"{tag}: {name}", line="")

        def on_log(line: str) -> None:
            progress.update(task, line=line[:60])

        try:
            image_id = images.ensure_image(
                kind, tag, rebuild, on_phase=on_phase, on_log=on_log, log_file=log_file
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
    """List kernlet's images on this machine (those labelled ai.kernlet.kernelspec), with
    their repo digests (the registry's sha256 once pushed or pulled). An agent's own list is
    in its heartbeat and the list_images command."""
    try:
        found = images.list_images()
    except images.ImageError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = []
    for item in found:
        labels = item["labels"]
        rows.append([
            ", ".join(item["tags"]) or "<untagged>",
            item["id"].removeprefix("sha256:")[:12],
            item["created"],
            f"{item['size'] / 1e6:.0f} MB",
            "\n".join(d.rsplit("@", 1)[-1][:19] for d in item.get("digests") or []) or "-",
            labels.get("ai.kernlet.runtime-path", "?"),
            labels.get("ai.kernlet.committed-from", "") or labels.get("ai.kernlet.features", ""),
        ])
    table(["tags", "id", "created", "size", "digests", "runtime path",
           "committed from / features"], rows)


def _with_progress(name: str, target: Target, as_json: bool, verb: str,
                   call: Callable[[KernletClient, Callable[[dict[str, Any]], None]],
                                  Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run a pull or a push, showing its progress events: JSON lines with ``--json``, a
    progress bar on a terminal, one line per event when piped; its result."""
    if as_json:
        def show(p: dict[str, Any]) -> None:
            json_line({"type": "progress", "data": p})

        res = go(target, lambda c: call(c, show))
        json_line({"type": "result", "data": res})
        return res
    piped = not sys.stdout.isatty()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  DownloadColumn(), TimeElapsedColumn(), console=console(),
                  transient=True, disable=piped) as progress:
        task = progress.add_task(f"{name}: asking {target.agent_id} to {verb}", total=None)

        def bar(p: dict[str, Any]) -> None:
            total = p.get("total") or None
            progress.update(task, description=f"{name}: {p.get('status', '')}",
                            completed=p.get("current") or 0, total=total)
            if piped:
                click.echo(f"{name}: {p.get('status', '')} {p.get('current') or 0}/"
                           f"{p.get('total') or '?'}")

        return go(target, lambda c: call(c, bar))


@image.command("pull")
@click.argument("name")
@connection_options
@click.option("--pull-timeout", type=click.FloatRange(min=1, max=24 * 3600), default=7200.0,
              show_default=True, help="seconds the agent may take for the pull")
@click.option("--json", "as_json", is_flag=True,
              help='JSON lines: {"type": "progress", "data": {status, current, total}} '
              'while pulling, then {"type": "result", "data": {image, status, id}}')
def pull(name: str, target: Target, pull_timeout: float, as_json: bool) -> None:
    """Have the agent pull image NAME (unless present), with the credentials its
    [registries] table has for NAME's registry, showing its progress."""
    res = _with_progress(name, target, as_json, "pull",
                         lambda c, show: c.pull(name, pull_timeout, on_progress=show))
    if not as_json:
        short = str(res.get("id") or "").removeprefix("sha256:")[:12]
        click.echo(f"{name} {res['status']} ({short})")


@image.command("push")
@click.argument("name")
@connection_options
@click.option("--registry", default="", help="host:port to push to (default: the registry "
              "NAME names; another one tags NAME as REGISTRY/NAME first)")
@click.option("--json", "as_json", is_flag=True,
              help='JSON lines: {"type": "progress", "data": {image, status, current, total}} '
              'while pushing, then {"type": "result", "data": {image, status, digest}}')
def push(name: str, target: Target, registry: str, as_json: bool) -> None:
    """Have the agent push its local image NAME to a registry, with the credentials of its
    [registries] table for that registry, showing its progress."""
    res = _with_progress(name, target, as_json, "push",
                         lambda c, show: c.push(name, registry, on_progress=show))
    if not as_json:
        click.echo(f"{res['image']} pushed ({res['digest']})")


@image.command("rm")
@click.argument("names", nargs=-1, required=True)
@connection_options
@click.option("--force", is_flag=True, help="also remove an image that stopped containers "
              "use (never one a live kernel runs)")
@click.option("--json", "as_json", is_flag=True, help="print {removed, refused} as JSON")
def rm(names: tuple[str, ...], target: Target, force: bool, as_json: bool) -> None:
    """Have the agent remove images NAMES that no live kernel runs (purge_images). Exits
    non-zero when one was refused (65: in use; 66: not found)."""
    res = go(target, lambda c: c.purge_images(list(names), force))
    refused: dict[str, dict[str, str]] = res["refused"]
    if as_json:
        emit(True, res, "")
    else:
        for name in res["removed"]:
            click.echo(f"removed {name}")
        for name, err in refused.items():
            click.echo(f"refused {name}: {err['type']}: {err['message']}", err=True)
    if refused:
        first = error_from_wire(next(iter(refused.values())))
        sys.exit(exit_code_for(first))
