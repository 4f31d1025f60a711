"""``kernlet notebook run``: execute a whole notebook on a kernel of an agent.

Every code cell runs in order as a query run with Jupyter's output shape
(``opts = {"output": "jupyter", "stdin": "refuse"}``); :class:`kernlet.notebook.NotebookOutputs`
folds the runs' items into the cells' outputs as nbclient would (display updates reach
earlier cells), and the executed notebook is written with nbformat, validated against its
schema. Empty cells are skipped as nbclient skips them (their outputs left as they were).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from kernlet.cli import main
from kernlet.cli._out import json_line
from kernlet.cli._remote import EXIT_CODES_HELP, Target, connection_options, go
from kernlet.client import KernletClient
from kernlet.images import DEFAULT_PYTHON_TAG
from kernlet.notebook import NotebookOutputs

__all__ = ["notebook", "run_notebook"]

#: The image of a kernel the command creates, unless --image names another.
DEFAULT_IMAGE = DEFAULT_PYTHON_TAG
#: Run options of every cell: Jupyter's output; input() refused (no one to answer it).
CELL_OPTS = {"output": "jupyter", "stdin": "refuse"}
#: Seconds a cell interrupted at its timeout may take to finish (its error output).
INTERRUPT_GRACE = 30.0

_HELP_EXIT = """\b
Exit status: 0 every cell ran (or --allow-errors), 1 a cell raised or passed --timeout
(the notebook is written up to it), or one of the exit codes below.
""" + EXIT_CODES_HELP


@main.group(epilog=EXIT_CODES_HELP)
@connection_options
@click.pass_context
def notebook(ctx: click.Context, target: Target) -> None:
    """Run Jupyter notebooks on an agent's kernels."""
    ctx.obj = target


def _progress(as_json: bool, index: int, total: int, status: str, seconds: float,
              count: int | None) -> None:
    if as_json:
        json_line({"type": "cell", "data": {"index": index, "of": total, "status": status,
                                           "seconds": round(seconds, 3),
                                           "execution_count": count}})
    else:
        click.echo(f"cell {index + 1}/{total}: {status} ({seconds:.1f}s)", err=True)


async def run_notebook(
    c: KernletClient, nb: Any, kernel_id: str, *, timeout: float | None,
    allow_errors: bool, as_json: bool = False,
) -> bool:
    """Run ``nb``'s code cells on ``kernel_id``, filling in their outputs and execution
    counts; True when every cell ran without error (or ``allow_errors``)."""
    import nbformat

    model = NotebookOutputs()
    cells = [(i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    done: list[tuple[Any, list[dict[str, Any]], int]] = []
    ok = True
    for index, cell in cells:
        if not str(cell.source).strip():
            _progress(as_json, index, len(nb.cells), "empty", 0.0, None)
            continue
        outs = model.start()
        done.append((cell, outs, len(model.runs) - 1))
        started = time.monotonic()
        run_id = uuid.uuid4().hex
        res = await c.run(kernel_id, str(cell.source), "query", dict(CELL_OPTS),
                          on_output=model.add, timeout=timeout, run_id=run_id)
        status = str(res.get("status"))
        if status == "exec-timeout":
            await _rest_of(c, kernel_id, run_id, model)
        failed = status == "exec-timeout" or res.get("exitCode") not in (0, None)
        _progress(as_json, index, len(nb.cells),
                  "timeout" if status == "exec-timeout" else "error" if failed else "ok",
                  time.monotonic() - started, model.execution_counts[-1])
        if failed and not allow_errors:
            ok = False
            break
    for cell, outs, run in done:
        cell.outputs = [nbformat.from_dict(out) for out in outs]  # type: ignore[no-untyped-call]
        cell.execution_count = model.execution_counts[run]
    return ok


async def _rest_of(c: KernletClient, kernel_id: str, run_id: str,
                   model: NotebookOutputs) -> None:
    """A run past its timeout: the agent answered at once and interrupted it; collect what
    it still sends (the KeyboardInterrupt error) until it has finished."""
    deadline = time.monotonic() + INTERRUPT_GRACE
    while time.monotonic() < deadline:
        result: dict[str, Any] = {}
        async for kind, data in c.stream(kernel_id, "", "continue", run_id):
            if kind == "result":
                result = dict(data)
            else:
                model.add(kind, data)
        if result.get("exitCode") is not None:
            return
        await asyncio.sleep(0.2)


@notebook.command("run", epilog=_HELP_EXIT)
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="where the executed notebook goes [default: over PATH]")
@click.option("--image", default=None,
              help=f"image of the kernel to create [default: {DEFAULT_IMAGE}]")
@click.option("--kernel", "kernel_id", default=None,
              help="run on this existing kernel (kept afterwards) instead of a new one")
@click.option("--upload", "uploads", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a file put in the kernel's working dir (/home/work) first; repeatable")
@click.option("--timeout", "cell_timeout", type=click.FloatRange(min=0.001), default=None,
              help="seconds each cell may take; past them it is interrupted (an error)")
@click.option("--allow-errors", is_flag=True,
              help="go on past a cell that raised or timed out")
@click.option("--json", "as_json", is_flag=True,
              help='JSON lines: one {"type": "cell", "data": {index, of, status, seconds, '
              'execution_count}} per cell, then {"type": "result", "data": {path, ok, '
              "kernel_id}}")
@click.pass_context
def run(ctx: click.Context, path: Path, out: Path | None, image: str | None,
        kernel_id: str | None, uploads: tuple[Path, ...], cell_timeout: float | None,
        allow_errors: bool, as_json: bool) -> None:
    """Execute every code cell of the notebook PATH in order on a kernel; write the
    executed notebook (outputs, execution counts) to -o (default: PATH itself)."""
    import nbformat

    if image is not None and kernel_id is not None:
        raise click.UsageError("give at most one of --image and --kernel")
    try:
        nb = nbformat.read(str(path), as_version=4)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise click.ClickException(f"{path}: not a notebook: {exc}") from exc
    target = ctx.find_object(Target)
    assert target is not None, "the notebook group stores its Target"

    async def body(c: KernletClient) -> tuple[bool, str]:
        kid = kernel_id
        created = kid is None
        if kid is None:
            kid = str((await c.create_kernel(image or DEFAULT_IMAGE))["id"])
            if not as_json:
                click.echo(f"kernel {kid} created", err=True)
        try:
            for upload in uploads:
                await c.upload(kid, upload.name, upload.read_bytes())
            ok = await run_notebook(c, nb, kid, timeout=cell_timeout,
                                    allow_errors=allow_errors, as_json=as_json)
        finally:
            if created:
                await c.destroy_kernel(kid)
        return ok, kid

    ok, kid = go(target, body)
    dest = out or path
    nbformat.validate(nb)
    nbformat.write(nb, str(dest))  # type: ignore[no-untyped-call]
    if as_json:
        json_line({"type": "result", "data": {"path": str(dest), "ok": ok, "kernel_id": kid}})
    else:
        click.echo(f"wrote {dest}" + ("" if ok else " (stopped at the first error)"), err=True)
    sys.exit(0 if ok else 1)
