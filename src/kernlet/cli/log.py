"""``kernlet log show|verify``: inspect and check an event log file offline."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from kernlet.cli import main
from kernlet.config import ConfigError, load_config
from kernlet.events import AGENT_STREAM, CodecError, IllegalTransition, event_to_dict, replay
from kernlet.store import SQLiteEventLog, StoreError


def _path(log: Path | None, config: Path | None) -> Path:
    if log is not None:
        return log
    try:
        return load_config(config).log_path
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _run(path: Path, fn: Any) -> Any:
    if not path.exists():
        raise click.ClickException(f"no event log at {path}")
    return asyncio.run(_with_log(path, fn))


async def _with_log(path: Path, fn: Any) -> Any:
    store = SQLiteEventLog(path)
    try:
        await store.open()
    except StoreError as exc:
        raise click.ClickException(f"{path}: {exc}") from exc
    try:
        return await fn(store)
    finally:
        await store.close()


@main.group("log")
def log_group() -> None:
    """Inspect or check an agent's event log (safe while the agent runs)."""


_LOG_OPT = click.option("--log", "log", type=click.Path(dir_okay=False, path_type=Path),
                        default=None, help="events.sqlite (default: from the agent config)")
_CFG_OPT = click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
                        default=None, help="agent.toml to find the log in")


@log_group.command("show")
@click.argument("kernel_id", required=False)
@_LOG_OPT
@_CFG_OPT
@click.option("--json", "as_json", is_flag=True)
def show(kernel_id: str | None, log: Path | None, config: Path | None, as_json: bool) -> None:
    """Without KERNEL_ID: every kernel with its state. With it: the kernel's whole stream."""
    path = _path(log, config)

    async def body(store: SQLiteEventLog) -> Any:
        if kernel_id is not None:
            return [event_to_dict(e) for e in await store.read_stream(kernel_id)]
        out = []
        for kid in await store.kernel_ids():
            state = replay(await store.read_stream(kid))
            if state is not None:
                out.append({"id": kid, "state": state.state.value, "seq": state.seq,
                            "image": state.image, "reason": state.reason,
                            "exit_code": state.exit_code, "updated_at": state.updated_at})
        return out

    data = _run(path, body)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    elif kernel_id is not None:
        if not data:
            raise click.ClickException(f"no stream for kernel {kernel_id!r} in {path}")
        for e in data:
            detail = {k: v for k, v in e["payload"].items()
                      if v not in (None, "", [], {}) and k not in ("config", "info")}
            click.echo(f"{e['seq']:5} {e['time']:.3f} {e['type']:24} {json.dumps(detail)}")
    else:
        click.echo(f"{'KERNEL':18} {'STATE':12} {'SEQ':>4} {'IMAGE':24} REASON")
        for k in data:
            click.echo(f"{k['id']:18} {k['state']:12} {k['seq']:>4} {k['image']:24} "
                       f"{k['reason']}")


@log_group.command("verify")
@_LOG_OPT
@_CFG_OPT
def verify(log: Path | None, config: Path | None) -> None:
    """Decode every event, check every stream's sequence and lifecycle; exit 1 on a problem."""
    path = _path(log, config)

    async def body(store: SQLiteEventLog) -> tuple[list[str], dict[str, int]]:
        problems: list[str] = []
        counts = {"streams": 0, "events": 0, "live": 0, "undelivered": 0}
        for stream in [*await store.kernel_ids(), AGENT_STREAM]:
            try:
                events = await store.read_stream(stream)
            except CodecError as exc:
                problems.append(f"{stream}: undecodable event: {exc}")
                continue
            if not events:
                continue
            counts["streams"] += 1
            counts["events"] += len(events)
            seqs = [e.seq for e in events]
            if seqs != list(range(1, len(seqs) + 1)):
                problems.append(f"{stream}: sequence has gaps or repeats: {seqs[:10]}...")
            if stream == AGENT_STREAM:
                continue
            try:
                state = replay(events)
            except IllegalTransition as exc:
                problems.append(f"{stream}: {exc}")
                continue
            if state is not None and state.state.value != "terminated":
                counts["live"] += 1
        counts["undelivered"] = await store.undelivered_count()
        if await store.count() != counts["events"]:
            problems.append(f"the log holds {await store.count()} events, streams "
                            f"{counts['events']}")
        return problems, counts

    problems, counts = _run(path, body)
    click.echo(f"{path}: {counts['streams']} streams, {counts['events']} events, "
               f"{counts['live']} live kernels, {counts['undelivered']} undelivered")
    for p in problems:
        click.secho(f"problem: {p}", fg="red", err=True)
    if problems:
        sys.exit(1)
    click.secho("ok", fg="green")
