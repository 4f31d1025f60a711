"""``kernlet kernel ...``: create, run code in, list, inspect and destroy kernels over NATS."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kernlet.cli import main
from kernlet.client import KernletClient
from kernlet.config import ConfigError, load_config, parse_size
from kernlet.errors import KernletError

T = TypeVar("T")


def _client(ctx: click.Context) -> KernletClient:
    o = ctx.obj
    return KernletClient(o["nats"], agent_id=o["agent_id"], prefix=o["prefix"])


def _go(ctx: click.Context, fn: Callable[[KernletClient], Awaitable[T]]) -> T:
    async def body() -> T:
        async with _client(ctx) as c:
            return await fn(c)

    try:
        return asyncio.run(body())
    except KernletError as exc:
        click.echo(f"error: {exc.type}: {exc.message}", err=True)
        sys.exit(1)


def _emit(as_json: bool, data: Any, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


@main.group()
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="agent.toml to read the NATS address and agent id from")
@click.option("--nats", envvar="KERNLET_NATS_URL", default=None, help="NATS URL")
@click.option("--agent-id", envvar="KERNLET_AGENT_ID", default=None, help="agent to talk to")
@click.pass_context
def kernel(ctx: click.Context, config: Path | None, nats: str | None,
           agent_id: str | None) -> None:
    """Manage kernels on an agent (defaults come from the agent's config file)."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    ctx.obj = {"nats": nats or cfg.nats.url, "agent_id": agent_id or cfg.agent.id,
               "prefix": cfg.nats.subject_prefix}


@kernel.command("create")
@click.option("--image", required=True, help="kernel image, e.g. kernlet/python:3.11")
@click.option("--cpu", type=float, default=None, help="CPU cores (fractions allowed)")
@click.option("--mem", default=None, help="memory limit, e.g. 512m or 2g")
@click.option("--env", "environ", multiple=True, help="KEY=VALUE, repeatable")
@click.option("--id", "kernel_id", default=None, help="kernel id (default: random)")
@click.option("--json", "as_json", is_flag=True, help="print the whole result as JSON")
@click.pass_context
def create(ctx: click.Context, image: str, cpu: float | None, mem: str | None,
           environ: tuple[str, ...], kernel_id: str | None, as_json: bool) -> None:
    """Create a kernel and print its id."""
    config: dict[str, Any] = {"environ": dict(e.split("=", 1) for e in environ if "=" in e)}
    if cpu is not None:
        config["cpu"] = cpu
    if mem is not None:
        config["mem"] = parse_size(mem)
    if kernel_id:
        config["kernel_id"] = kernel_id
    res = _go(ctx, lambda c: c.create_kernel(image, **config))
    _emit(as_json, res, str(res["id"]))


@kernel.command("exec")
@click.argument("kernel_id")
@click.option("--code", default=None, help="code to run")
@click.option("--file", "file", type=click.File("r"), default=None, help="file with the code")
@click.option("--mode", type=click.Choice(["query", "batch"]), default="query",
              help="query: Python on the kernel; batch: the code is a shell command")
@click.option("--build", default=None, help="batch mode: build command run before the code")
@click.option("--json", "as_json", is_flag=True, help="print output items and result as JSON")
@click.pass_context
def exec_(ctx: click.Context, kernel_id: str, code: str | None, file: Any, mode: str,
          build: str | None, as_json: bool) -> None:
    """Run code, stream its output, exit with its exit status."""
    if (code is None) == (file is None):
        raise click.UsageError("give exactly one of --code or --file")
    text = code if code is not None else file.read()
    opts = {"exec": text, "build": build} if mode == "batch" else None
    items: list[Any] = []

    def out(kind: str, data: Any) -> None:
        if as_json:
            items.append([kind, data])
        elif kind == "stdout":
            click.echo(data, nl=False)
        elif kind == "stderr":
            click.echo(data, nl=False, err=True)
        elif kind == "media":
            click.echo(f"[media {data.get('type') if isinstance(data, dict) else ''}]")
        elif kind == "html":
            click.echo(f"[html {len(data)} chars]")

    def ask(prompt: dict[str, Any]) -> str:
        return str(click.prompt(prompt.get("prompt") or "input", default="",
                                hide_input=bool(prompt.get("is_password")),
                                show_default=False))

    res = _go(ctx, lambda c: c.run(kernel_id, text if mode == "query" else "", mode, opts,
                                   on_output=out, on_input=ask))
    if as_json:
        click.echo(json.dumps({"output": items, "result": res}, default=str))
    code_ = res.get("exitCode")
    sys.exit(int(code_) if isinstance(code_, int) else 0)


@kernel.command("ls")
@click.option("--all", "all_", is_flag=True, help="include terminated kernels")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def ls(ctx: click.Context, all_: bool, as_json: bool) -> None:
    """List kernels."""
    ks = _go(ctx, lambda c: c.list_kernels(all=all_))
    lines = [f"{'ID':18} {'STATE':12} {'IMAGE':24} REASON"]
    lines += [f"{k['id']:18} {k['state']:12} {k['image']:24} {k['reason']}" for k in ks]
    _emit(as_json, ks, "\n".join(lines))


@kernel.command("destroy")
@click.argument("kernel_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def destroy(ctx: click.Context, kernel_id: str, as_json: bool) -> None:
    """Destroy a kernel; returns when it is cleaned up."""
    res = _go(ctx, lambda c: c.destroy_kernel(kernel_id))
    _emit(as_json, res, f"{kernel_id} terminated ({res.get('reason')}, "
                        f"exit code {res.get('exit_code')})")


@kernel.command("reset")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reset(ctx: click.Context, yes: bool, as_json: bool) -> None:
    """Destroy EVERY kernel of the agent (stopping the agent never does this)."""
    if not yes:
        click.confirm(f"destroy every kernel of agent {ctx.obj['agent_id']}?", abort=True)
    ids = _go(ctx, lambda c: c.reset_agent())
    _emit(as_json, ids, f"destroyed {len(ids)} kernel(s)")


@kernel.command("events")
@click.argument("kernel_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def events(ctx: click.Context, kernel_id: str, as_json: bool) -> None:
    """A kernel's history from the agent's event log."""
    evs = _go(ctx, lambda c: c.events(kernel_id))
    lines = []
    for e in evs:
        detail = {k: v for k, v in e["payload"].items() if k not in ("config", "info") and v}
        lines.append(f"{e['seq']:4} {e['time']:.3f} {e['type']:24} {json.dumps(detail)}")
    _emit(as_json, evs, "\n".join(lines))
