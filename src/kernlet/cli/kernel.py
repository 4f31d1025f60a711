"""``kernlet kernel ...``: create, list, inspect, restart, interrupt and destroy kernels, read
their logs, ask for completions and start services, over NATS. ``exec`` lives in
:mod:`kernlet.cli.kernel_exec`, ``files`` and ``cp`` in :mod:`kernlet.cli.kernel_files`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from kernlet.cli import main
from kernlet.cli._out import emit, iso, json_line, table
from kernlet.cli._remote import EXIT_CODES_HELP, Target, connection_options, exit_code_for, fail, go
from kernlet.client import KernletClient
from kernlet.config import parse_size
from kernlet.errors import error_from_wire

_JSON = click.option("--json", "as_json", is_flag=True, help="print the result as JSON")


def target(ctx: click.Context) -> Target:
    t = ctx.find_object(Target)
    assert t is not None, "the kernel group stores its Target"
    return t


@main.group(epilog=EXIT_CODES_HELP)
@connection_options
@click.pass_context
def kernel(ctx: click.Context, target: Target) -> None:
    """Manage kernels on an agent (defaults come from the agent's config file)."""
    ctx.obj = target


@kernel.command("create")
@click.option("--image", required=True, help="kernel image, e.g. kernlet/python:3.11")
@click.option("--cpu", type=float, default=None, help="CPU cores (fractions allowed)")
@click.option("--mem", default=None, help="memory limit, e.g. 512m or 2g")
@click.option("--shm-size", default=None, help="size of /dev/shm, e.g. 1g (at most --mem)")
@click.option("--slot", "slots", multiple=True, metavar="NAME=AMOUNT",
              help="another resource slot, e.g. cuda.device=1; repeatable")
@click.option("--env", "environ", multiple=True, help="KEY=VALUE, repeatable")
@click.option("--mount", "mounts", multiple=True, metavar="ROOT:PATH:TARGET[:ro|:rw]",
              help="a storage mount, e.g. vfroot:alice/data:/home/work/data:ro (repeatable)")
@click.option("--preopen-port", "preopen", type=click.IntRange(1, 65535), multiple=True,
              metavar="PORT", help="a container port to publish now for a server started "
              "later (its host port is in the result); repeatable")
@click.option("--bootstrap", type=click.File("r"), default=None, metavar="FILE",
              help="a shell script run once in /home/work before the runtime starts")
@click.option("--count", type=click.IntRange(1, 64), default=1, show_default=True,
              help="how many kernels of this config, in one create_kernels call (one session)")
@click.option("--cluster", is_flag=True,
              help="with --count: the kernels are one session on a network of their own, "
              "named main1, sub1, sub2... (docs/sessions.md)")
@click.option("--id", "kernel_id", default=None, help="kernel id (default: random; "
              "with --count, the first kernel's)")
@click.option("--json", "as_json", is_flag=True, help="print the whole result as JSON")
@click.pass_context
def create(ctx: click.Context, image: str, cpu: float | None, mem: str | None,
           shm_size: str | None, slots: tuple[str, ...], environ: tuple[str, ...],
           mounts: tuple[str, ...], preopen: tuple[int, ...], bootstrap: Any, count: int,
           cluster: bool, kernel_id: str | None, as_json: bool) -> None:
    """Create a kernel (or --count of them) and print its id (one per line)."""
    config: dict[str, Any] = {"image": image,
                              "environ": dict(e.split("=", 1) for e in environ if "=" in e)}
    if any("=" not in s for s in slots):
        raise click.BadParameter("NAME=AMOUNT, e.g. cuda.device=1", param_hint="--slot")
    if slots:
        config["slots"] = dict(s.split("=", 1) for s in slots)
    if mounts:
        config["mounts"] = [parse_mount(m) for m in mounts]
    if preopen:
        config["preopen_ports"] = list(preopen)
    if bootstrap is not None:
        config["bootstrap"] = bootstrap.read()
    if cpu is not None:
        config["cpu"] = cpu
    for name, text in (("mem", mem), ("shm_size", shm_size)):
        if text is not None:
            try:
                config[name] = parse_size(text)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=f"--{name.replace('_', '-')}") \
                    from exc
    if cluster and count < 2:
        raise click.BadParameter("a cluster is two kernels or more: give --count",
                                 param_hint="--cluster")
    ids = None
    if kernel_id:
        ids = [kernel_id] + [f"{kernel_id}-{i}" for i in range(1, count)]
    results = go(target(ctx), lambda c: c.create_kernels(
        [config] * count, kernel_ids=ids, cluster={} if cluster else None))
    failed = [r for r in results if not r.get("ok")]
    if count == 1 and failed:
        error = error_from_wire(failed[0].get("error"))
        fail(error.type, error.message, exit_code_for(error))
    if as_json:
        emit(True, results[0] if count == 1 else results, "")
    else:
        for r in results:
            click.echo(r["id"] if r.get("ok") else
                       f"{r['id']}: failed: {(r.get('error') or {}).get('message', '?')}")
    if failed:
        sys.exit(exit_code_for(error_from_wire(failed[0].get("error"))))


def parse_mount(text: str) -> dict[str, str]:
    """``root:path:target[:ro|:rw]`` as a KernelConfig mount (the target has no ':')."""
    rest, mode = text, "rw"
    if text.endswith((":ro", ":rw")):
        rest, mode = text[:-3], text[-2:]
    source, sep, target = rest.rpartition(":")
    if not sep or ":" not in source:
        raise click.BadParameter(f"{text!r} is not ROOT:PATH:TARGET[:ro|:rw]",
                                 param_hint="--mount")
    return {"source": source, "target": target, "mode": mode}


@kernel.command("ls")
@click.option("--all", "all_", is_flag=True, help="include terminated kernels")
@_JSON
@click.pass_context
def ls(ctx: click.Context, all_: bool, as_json: bool) -> None:
    """List kernels."""
    ks = go(target(ctx), lambda c: c.list_kernels(all=all_))
    if as_json:
        emit(True, ks, "")
        return
    table(["ID", "STATE", "IMAGE", "CREATED", "RUNS", "REASON"],
          [[k["id"], k["state"], k["image"], iso(k.get("created_at")), k.get("executions"),
            k.get("reason")] for k in ks])


@kernel.command("destroy")
@click.argument("kernel_id")
@_JSON
@click.pass_context
def destroy(ctx: click.Context, kernel_id: str, as_json: bool) -> None:
    """Destroy a kernel; returns when it is cleaned up."""
    res = go(target(ctx), lambda c: c.destroy_kernel(kernel_id))
    emit(as_json, res, f"{kernel_id} terminated ({res.get('reason')}, "
                       f"exit code {res.get('exit_code')})")


@kernel.command("restart")
@click.argument("kernel_id")
@_JSON
@click.pass_context
def restart(ctx: click.Context, kernel_id: str, as_json: bool) -> None:
    """Restart a kernel's container (same id, same resources, /home/work kept)."""
    res = go(target(ctx), lambda c: c.restart_kernel(kernel_id))
    emit(as_json, res, f"{kernel_id} restarted")


@kernel.command("interrupt")
@click.argument("kernel_id")
@_JSON
@click.pass_context
def interrupt(ctx: click.Context, kernel_id: str, as_json: bool) -> None:
    """Interrupt the code running in a kernel (KeyboardInterrupt; SIGINT in batch mode)."""
    res = go(target(ctx), lambda c: c.interrupt(kernel_id))
    emit(as_json, res, f"{kernel_id} interrupted")


@kernel.command("reset")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@_JSON
@click.pass_context
def reset(ctx: click.Context, yes: bool, as_json: bool) -> None:
    """Destroy EVERY kernel of the agent (stopping the agent never does this)."""
    t = target(ctx)
    if not yes:
        click.confirm(f"destroy every kernel of agent {t.agent_id}?", abort=True)
    ids = go(t, lambda c: c.reset_agent())
    emit(as_json, ids, f"destroyed {len(ids)} kernel(s)")


@kernel.command("events")
@click.argument("kernel_id")
@_JSON
@click.pass_context
def events(ctx: click.Context, kernel_id: str, as_json: bool) -> None:
    """A kernel's history from the agent's event log."""
    evs = go(target(ctx), lambda c: c.events(kernel_id))
    if as_json:
        emit(True, evs, "")
        return
    rows = []
    for e in evs:
        detail = {k: v for k, v in e["payload"].items() if k not in ("config", "info") and v}
        rows.append([e["seq"], iso(e["time"]), e["type"], json.dumps(detail, default=str)])
    table(["SEQ", "TIME", "TYPE", "DETAIL"], rows)


@kernel.command("logs")
@click.argument("kernel_id")
@click.option("--tail", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="how many of the last lines of the container's output to show")
@click.option("--follow", "-f", is_flag=True,
              help="keep printing new lines as the container logs them, until the kernel "
              "is gone (exit 0) or Ctrl-C (exit 130)")
@click.option("--json", "as_json", is_flag=True,
              help='print {"kernel_id", "logs"} as JSON; with --follow, JSON lines '
              '{"kernel_id", "time", "line"}')
@click.pass_context
def logs(ctx: click.Context, kernel_id: str, tail: int, follow: bool, as_json: bool) -> None:
    """The kernel container's own output (the runtime's log, not the code's output); for a
    terminated kernel, what was kept of it at teardown (container.keep-logs)."""
    if follow:
        go(target(ctx), lambda c: _follow(c, kernel_id, tail, as_json))
        return
    text = go(target(ctx), lambda c: c.logs(kernel_id, tail))
    if as_json:
        emit(True, {"kernel_id": kernel_id, "logs": text}, "")
    else:
        click.echo(text, nl=not text.endswith("\n"))


async def _follow(c: KernletClient, kernel_id: str, tail: int, as_json: bool) -> None:
    await c.logs(kernel_id, 1)  # a kernel that does not exist is an error, not an empty log
    async for stamp, line in c.follow_logs(kernel_id, tail):
        if as_json:
            json_line({"kernel_id": kernel_id, "time": stamp, "line": line})
        else:
            click.echo(line, nl=not line.endswith("\n"))
    click.echo(f"kernel {kernel_id} is gone", err=True)


@kernel.command("complete")
@click.argument("kernel_id")
@click.argument("text")
@click.option("--pos", type=click.IntRange(min=0), default=None,
              help="cursor position in TEXT [default: its end]")
@_JSON
@click.pass_context
def complete(ctx: click.Context, kernel_id: str, text: str, pos: int | None,
             as_json: bool) -> None:
    """Ask the kernel for completions of TEXT (one match a line)."""
    res = go(target(ctx), lambda c: c.complete(kernel_id, text, pos))
    matches = res.get("matches", [])
    emit(as_json, res, "\n".join(str(m) for m in matches))


@kernel.group("service")
def service() -> None:
    """Start or stop an in-container service (e.g. jupyter, ttyd) of a kernel."""


@service.command("start")
@click.argument("kernel_id")
@click.argument("name")
@_JSON
@click.pass_context
def service_start(ctx: click.Context, kernel_id: str, name: str, as_json: bool) -> None:
    """Start service NAME; prints its URL once it answers."""
    res = go(target(ctx), lambda c: c.start_service(kernel_id, name))
    emit(as_json, res, str(res.get("url", res)))


@service.command("stop")
@click.argument("kernel_id")
@click.argument("name")
@_JSON
@click.pass_context
def service_stop(ctx: click.Context, kernel_id: str, name: str, as_json: bool) -> None:
    """Stop service NAME."""
    res = go(target(ctx), lambda c: c.shutdown_service(kernel_id, name))
    emit(as_json, res, f"{name} stopped")
