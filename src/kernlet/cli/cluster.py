"""``kernlet agents ls`` (every agent of the cluster, with free slots) and ``kernlet events``
(agents' events from the JetStream stream, live with ``--follow``, each event once)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from kernlet.cli import main
from kernlet.cli._out import emit, iso, json_line, table
from kernlet.cli._remote import EXIT_CODES_HELP, Target, connection_options, go
from kernlet.client import EventSubscriber, KernletClient
from kernlet.config import AgentConfig, ConfigError, load_config
from kernlet.drivers.etcd import EtcdDriver
from kernlet.errors import AgentUnavailable, KernletError
from kernlet.events import unpack

__all__ = ["agents", "events", "gather_agents"]


@main.group("agents", epilog=EXIT_CODES_HELP)
def agents() -> None:
    """The agents of a cluster (as a manager sees them)."""


async def _from_etcd(cfg: AgentConfig) -> dict[str, dict[str, Any]]:
    e = cfg.etcd
    if not e.enabled:
        return {}
    etcd = EtcdDriver(e.host, e.port, e.namespace, user=e.user, password=e.password,
                      timeout=e.timeout)
    try:
        found = await etcd.live_agents()
    except KernletError as exc:
        click.echo(f"warning: etcd {e.host}:{e.port}: {exc}; agents from heartbeats only",
                   err=True)
        return {}
    finally:
        await etcd.close()
    out = {}
    for agent_id, value in found.items():
        try:
            out[agent_id] = dict(json.loads(value or "{}"))
        except (ValueError, TypeError):
            out[agent_id] = {}
    return out


async def _ask(c: KernletClient, agent_id: str, timeout: float) -> dict[str, Any] | None:
    one = KernletClient(c.url, agent_id=agent_id, prefix=c.prefix, timeout=timeout, nc=c.nc)
    try:
        pong = await one.ping("kernlet-cli")
        hw = await one.gather_hwinfo()
    except KernletError:
        return None
    return {"version": pong.get("version"), "slots": hw.get("slots", {})}


async def gather_agents(c: KernletClient, cfg: AgentConfig, listen: float,
                        timeout: float) -> list[dict[str, Any]]:
    """Agents with a live etcd key or a heartbeat heard within ``listen`` s, each asked for
    its slots (``answers`` false when it did not reply within ``timeout``)."""
    heard: dict[str, dict[str, Any]] = {}

    async def on_heartbeat(msg: Any) -> None:
        with_body = unpack(msg.data, max_size=16 * 1024 * 1024)
        if isinstance(with_body, dict) and with_body.get("id"):
            heard[str(with_body["id"])] = with_body

    sub = await c.nc.subscribe(f"{c.prefix}.heartbeat.*", cb=on_heartbeat)
    try:
        in_etcd = await _from_etcd(cfg)
        await asyncio.sleep(listen)
    finally:
        await sub.unsubscribe()
    ids = sorted(set(in_etcd) | set(heard))
    answers = await asyncio.gather(*(_ask(c, i, timeout) for i in ids))
    rows = []
    for agent_id, answer in zip(ids, answers, strict=True):
        hb, key = heard.get(agent_id, {}), in_etcd.get(agent_id, {})
        rows.append({
            "id": agent_id,
            "seen": [s for s, there in (("etcd", agent_id in in_etcd),
                                        ("heartbeat", agent_id in heard)) if there],
            "answers": answer is not None,
            "version": (answer or {}).get("version") or hb.get("version") or key.get("version"),
            "addr": hb.get("addr") or key.get("addr"),
            "region": hb.get("region"),
            "scaling_group": hb.get("scaling_group"),
            "kernels": len(hb["kernels"]) if "kernels" in hb else key.get("kernels"),
            "slots": (answer or {}).get("slots") or hb.get("slots_used") or {},
            "last_seen": hb.get("time") or key.get("time"),
        })
    return rows


def _free(slots: dict[str, Any], name: str) -> str:
    s = slots.get(name)
    if not isinstance(s, dict):
        return ""
    free, cap = s.get("free"), s.get("capacity")
    if s.get("type") == "bytes":  # amounts travel as decimal strings
        try:
            return f"{float(str(free)) / 2**30:.1f}/{float(str(cap)) / 2**30:.1f} GiB"
        except (TypeError, ValueError):
            pass
    return f"{free}/{cap}"


@agents.command("ls")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="agent.toml to read the NATS URL, subject prefix and etcd from "
              "(default: the search path of docs/cli.md)")
@click.option("--nats", envvar="KERNLET_NATS_URL", default=None,
              help="NATS URL [default: nats.url of the config]")
@click.option("--listen", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="seconds to listen for heartbeats (finds agents that have no etcd key; "
              "agents beat every heartbeat.interval, 10 s by default)")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="seconds each agent has to answer for its free slots")
@click.option("--json", "as_json", is_flag=True,
              help="print a list of {id, seen, answers, version, addr, region, "
              "scaling_group, kernels, slots, last_seen} as JSON")
def agents_ls(config: Path | None, nats: str | None, listen: float, timeout: float,
              as_json: bool) -> None:
    """Every agent seen through its etcd liveness key or its heartbeat, with its free
    slots (asked from the agent; from its last heartbeat if it does not answer)."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    target = Target(nats or cfg.nats.url, "", cfg.nats.subject_prefix, timeout)
    rows = go(target, lambda c: gather_agents(c, cfg, listen, timeout))
    if as_json:
        emit(True, rows, "")
        return
    table(["ID", "SEEN", "ANSWERS", "VERSION", "KERNELS", "CPU FREE", "MEM FREE",
           "LAST SEEN"],
          [[r["id"], ",".join(r["seen"]), "yes" if r["answers"] else "no", r["version"],
            r["kernels"], _free(r["slots"], "cpu"), _free(r["slots"], "mem"),
            iso(r["last_seen"])] for r in rows])


@main.command("events", epilog=EXIT_CODES_HELP)
@connection_options
@click.option("--all-agents", is_flag=True, help="every agent's events, not one agent's")
@click.option("--kernel", "kernel_id", default=None, help="only this kernel's events")
@click.option("--since", type=click.FloatRange(min=0), default=None,
              help="seconds back: print the events the stream stored since then "
              "[default: 600 without --follow, 0 (only new events) with it]")
@click.option("--follow", "-f", is_flag=True,
              help="keep printing events as they come, until Ctrl-C (exit 130)")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines: one event {id, kernel_id, seq, time, type, version, "
              "payload} a line")
def events(target: Target, all_agents: bool, kernel_id: str | None, since: float | None,
           follow: bool, as_json: bool) -> None:
    """An agent's events from the JetStream event stream, each once (duplicates from
    re-publishing dropped by event id). Without --follow: those the stream stored in the
    last --since seconds, then exit; with it: live as well (read from the stream when the
    server has one, else from plain NATS)."""
    back = since if since is not None else (0.0 if follow else 600.0)

    def show(e: dict[str, Any]) -> None:
        if as_json:
            json_line(e)
            return
        detail = {k: v for k, v in (e.get("payload") or {}).items()
                  if k not in ("config", "info") and v}
        click.echo(f"{iso(e.get('time'))}  {e.get('kernel_id')}  {e.get('seq')}  "
                   f"{e.get('type')}  {json.dumps(detail, default=str)}")

    async def body(c: KernletClient) -> int:
        js = True
        try:
            await c.nc.jetstream().find_stream_name_by_subject(f"{c.prefix}.events.>")
        except Exception:  # noqa: BLE001 - no JetStream, or no stream: plain NATS
            js = False
        if not js and not follow:
            raise AgentUnavailable("no JetStream event stream to read past events from; "
                               "use --follow for live events over plain NATS")
        sub = EventSubscriber(c.nc, c.prefix, "*" if all_agents else target.agent_id,
                              jetstream=js, since=time.time() - back if back else None,
                              kernel_id=kernel_id)
        await sub.start()
        count = 0
        try:
            while True:
                try:
                    event = await sub.next(None if follow else 1.0)
                except TimeoutError:
                    return count  # nothing more within a second: caught up
                show(event)
                count += 1
                if not follow and sub.pending == 0:
                    return count
        finally:
            await sub.stop()

    go(target, body)
    sys.exit(0)
