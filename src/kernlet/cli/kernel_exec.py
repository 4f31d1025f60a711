"""``kernlet kernel exec``: run code in a kernel the way ``kubectl exec`` runs a command.

Output streams as the code produces it; the exit status is the code's own. Ctrl-C
interrupts the run *in the kernel* (``interrupt_kernel``) and keeps streaming until the run
ends, so the kernel is idle and usable afterwards; a second Ctrl-C detaches (the CLI exits,
the kernel finishes the interrupt by itself).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from kernlet.cli._out import json_line
from kernlet.cli._remote import EX_IOERR, INTERRUPTED, RUN_TIMEOUT, fail, go
from kernlet.cli.kernel import kernel, target
from kernlet.client import KernletClient
from kernlet.errors import KernletError
from kernlet.notebook import media_files

__all__ = ["exec_", "exit_status"]

_HELP_EXIT = """\b
Exit status: the code's own (query mode: 0 finished, 1 it raised; batch mode: the
command's exit code), or
  65  the agent refused the request (bad input, kernel not running)
  66  no such kernel
  69  NATS or the agent unreachable
  70  internal error in the agent
  74  an outside service failed (Docker, the kernel's runtime)
  75  no reply within --timeout of the kernel group
  124 --run-timeout passed: the agent interrupted the run
  130 Ctrl-C: the run was interrupted (or a second Ctrl-C detached)
"""


class _Session:
    """One exec: prints output, answers prompts, turns Ctrl-C into interrupt_kernel."""

    def __init__(self, client: KernletClient, kernel_id: str, as_json: bool,
                 save_media: Path | None = None) -> None:
        self.client = client
        self.kernel_id = kernel_id
        self.as_json = as_json
        self.save_media = save_media
        #: the files written under ``save_media``, in order
        self.saved: list[Path] = []
        self.interrupts = 0
        self._prompt: asyncio.Future[str | None] | None = None
        self._main: asyncio.Task[Any] | None = None
        self._sent: asyncio.Task[Any] | None = None

    # -- Ctrl-C ----------------------------------------------------------------------------

    def on_sigint(self) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            click.echo("\n^C interrupting the run in the kernel (Ctrl-C again to detach)",
                       err=True)
            self._sent = asyncio.ensure_future(self._interrupt())
            if self._prompt is not None and not self._prompt.done():
                self._prompt.set_result(None)  # decline the prompt: the run is interrupted
        elif self._main is not None:
            self._main.cancel()

    async def _interrupt(self) -> None:
        try:
            await self.client.interrupt(self.kernel_id)
        except KernletError as exc:
            click.echo(f"interrupt failed: {exc.type}: {exc.message}", err=True)

    # -- output and input ------------------------------------------------------------------

    def out(self, kind: str, data: Any) -> None:
        if self.save_media is not None:
            self._save(kind, data)
        if self.as_json:
            json_line({"type": kind, "data": data})
        elif kind == "stdout":
            click.echo(data, nl=False)
        elif kind == "stderr":
            click.echo(data, nl=False, err=True)
        elif kind == "media":
            click.echo(f"[media {data.get('type') if isinstance(data, dict) else ''}]")
        elif kind == "html":
            click.echo(f"[html {len(data)} chars]")

    def _save(self, kind: str, data: Any) -> None:
        assert self.save_media is not None
        for ext, blob in media_files(kind, data):
            path = self.save_media / f"media-{len(self.saved) + 1:03d}.{ext}"
            try:
                self.save_media.mkdir(parents=True, exist_ok=True)
                path.write_bytes(blob)
            except OSError as exc:
                fail("OSError", f"--save-media: {exc}", EX_IOERR)
            self.saved.append(path)
            if not self.as_json:
                click.echo(f"[saved {path}]", err=True)

    async def ask(self, prompt: dict[str, Any]) -> str | None:
        """Read the answer in a daemon thread, so Ctrl-C (handled on the loop) still works."""
        if self.interrupts:
            return None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str | None] = loop.create_future()
        self._prompt = fut

        def read() -> None:
            try:
                answer: str | None = str(click.prompt(
                    prompt.get("prompt") or "input: ", default="", show_default=False,
                    prompt_suffix="",
                    hide_input=bool(prompt.get("is_password")), err=True))
            except (click.Abort, EOFError):
                answer = None
            def settle() -> None:
                if not fut.done():
                    fut.set_result(answer)

            loop.call_soon_threadsafe(settle)

        threading.Thread(target=read, name="kernlet-prompt", daemon=True).start()
        try:
            return await fut
        finally:
            self._prompt = None

    # -- the run ---------------------------------------------------------------------------

    async def run(self, text: str, mode: str, opts: dict[str, Any] | None,
                  run_timeout: float | None) -> dict[str, Any] | None:
        """The final result, or None when detached by a second Ctrl-C."""
        loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        loop.add_signal_handler(signal.SIGINT, self.on_sigint)
        try:
            return await self.client.run(self.kernel_id, text, mode, opts,
                                         on_output=self.out, on_input=self.ask,
                                         timeout=run_timeout)
        except asyncio.CancelledError:
            if self.interrupts < 2:
                raise
            return None
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            if self._sent is not None:
                await asyncio.gather(self._sent, return_exceptions=True)


@kernel.command("exec", epilog=_HELP_EXIT)
@click.argument("kernel_id")
@click.option("--code", default=None, help="code to run")
@click.option("--file", "file", type=click.File("r"), default=None,
              help="file with the code ('-' reads stdin)")
@click.option("--mode", type=click.Choice(["query", "batch"]), default="query",
              show_default=True,
              help="query: Python on the kernel; batch: the code is a shell command")
@click.option("--build", default=None, help="batch mode: build command run before the code")
@click.option("--run-timeout", type=click.FloatRange(min=0.001), default=None,
              help="seconds the run may take; past them the agent interrupts it (exit 124)")
@click.option("--save-media", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="write each image received (png, jpeg, gif, svg) to DIR/media-NNN.EXT")
@click.option("--json", "as_json", is_flag=True,
              help='JSON lines: one {"type", "data"} per output item, then '
              '{"type": "result", "data": {status, exitCode, ...}}')
@click.pass_context
def exec_(ctx: click.Context, kernel_id: str, code: str | None, file: Any, mode: str,
          build: str | None, run_timeout: float | None, save_media: Path | None,
          as_json: bool) -> None:
    """Run code in KERNEL_ID, stream its output, exit with its exit status.

    Ctrl-C interrupts the run in the kernel and waits for it to end; a second Ctrl-C
    detaches."""
    if (code is None) == (file is None):
        raise click.UsageError("give exactly one of --code or --file")
    text = code if code is not None else file.read()
    opts = {"exec": text, "build": build} if mode == "batch" else None
    state: dict[str, _Session] = {}

    async def body(c: KernletClient) -> dict[str, Any] | None:
        s = state["s"] = _Session(c, kernel_id, as_json, save_media)
        return await s.run(text if mode == "query" else "", mode, opts, run_timeout)

    res = go(target(ctx), body)
    session = state["s"]
    if res is None:
        click.echo(f"detached; the kernel may still be running the code "
                   f"(kernlet kernel interrupt {kernel_id})", err=True)
        sys.exit(INTERRUPTED)
    if as_json:
        json_line({"type": "result", "data": res})
    sys.exit(exit_status(res, session.interrupts > 0))


def exit_status(res: dict[str, Any], interrupted: bool) -> int:
    """The CLI's exit status for a run's final result."""
    if interrupted:
        return INTERRUPTED
    if res.get("status") == "exec-timeout":
        return RUN_TIMEOUT
    code = res.get("exitCode")
    return int(code) if isinstance(code, int) else 0
