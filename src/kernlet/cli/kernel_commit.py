"""``kernlet kernel commit KERNEL_ID IMAGE[:TAG]``: the running kernel's container as a new
image (its installed packages and files outside /home/work), which a create can use at once."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from kernlet.cli._out import console, emit, json_line
from kernlet.cli._remote import go
from kernlet.cli.kernel import kernel, target
from kernlet.drivers.docker_images import split_ref

__all__ = ["commit"]


@kernel.command("commit")
@click.argument("kernel_id")
@click.argument("image")
@click.option("--no-wait", is_flag=True, help="print the commit id and return at once "
              "(the end is an image_commit_finished event; see get_commit_status)")
@click.option("--commit-timeout", type=click.FloatRange(min=1), default=3600.0,
              show_default=True, help="seconds to wait for the commit to end")
@click.option("--json", "as_json", is_flag=True,
              help='JSON lines: {"type": "started", "data": {commit_id, ...}}, then '
              '{"type": "result", "data": {commit_id, status, image_id, error...}}')
@click.pass_context
def commit(ctx: click.Context, kernel_id: str, image: str, no_wait: bool,
           commit_timeout: float, as_json: bool) -> None:
    """Commit running kernel KERNEL_ID to the new image IMAGE[:TAG] (tag "latest" if none);
    the kernel keeps running. Prints the new image's id."""
    repo, tag = split_ref(image)
    t = target(ctx)
    if no_wait:
        res = go(t, lambda c: c.commit_kernel(kernel_id, repo, tag))
        emit(as_json, res, str(res["commit_id"]))
        return
    if as_json:
        def started(s: dict[str, Any]) -> None:
            json_line({"type": "started", "data": s})

        res = go(t, lambda c: c.commit(kernel_id, repo, tag, commit_timeout, started))
        json_line({"type": "result", "data": res})
        return
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                  console=console(), transient=True, disable=not sys.stdout.isatty()) as bar:
        task = bar.add_task(f"{kernel_id} → {repo}:{tag}: asking {t.agent_id}", total=None)

        def shown(s: dict[str, Any]) -> None:
            bar.update(task, description=f"{kernel_id} → {repo}:{tag}: committing "
                       f"(commit {s['commit_id'][:12]})")

        res = go(t, lambda c: c.commit(kernel_id, repo, tag, commit_timeout, shown))
    click.echo(f"{repo}:{tag} {res['image_id']}")
