"""``kernlet doctor``: check this node against what the agent needs; print each finding."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from kernlet import doctor as dr
from kernlet.cli import main
from kernlet.config import AgentConfig, ConfigError, find_config, load_config

_STYLE = {dr.Status.OK: ("ok", "green"), dr.Status.WARN: ("WARN", "yellow"),
          dr.Status.FAIL: ("FAIL", "red")}


def make_node() -> dr.Node:
    """The node to examine (tests replace this)."""
    return dr.Node()


def _load(config: Path | None) -> tuple[AgentConfig | None, dr.Finding]:
    source = config if config is not None else find_config()
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        return None, dr.Finding("config", dr.Status.FAIL, str(exc),
                                "fix the key it names (docs/configuration.md); nothing else "
                                "is checked until the configuration loads")
    where = str(source) if source is not None else "no agent.toml found: the defaults"
    return cfg, dr.Finding("config", dr.Status.OK, where)


def _print(findings: list[dr.Finding]) -> None:
    width = max(len(f.check) for f in findings)
    for f in findings:
        label, color = _STYLE[f.status]
        click.echo(f"{click.style(f'{label:>4}', fg=color, bold=True)}  "
                   f"{f.check:<{width}}  {f.detail}")
        if f.fix:
            click.echo(f"{'':4}  {'':<{width}}  fix: {f.fix}")
    n = dr.counts(findings)
    verdict = ("something blocks the agent (exit 1)" if n["fail"]
               else "nothing blocks the agent")
    click.echo(f"\n{n['ok']} ok, {n['warn']} warn, {n['fail']} fail: {verdict}")


@main.command("doctor")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="agent.toml to check against (default: the agent's search "
              "path, ./agent.toml, ~/.config/kernlet/agent.toml, /etc/kernlet/agent.toml)")
@click.option("--json", "as_json", is_flag=True,
              help="print one JSON object: ok, exit_code, config, counts, findings")
@click.option("--write-sysctl", "sysctl_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="also write the recommended sysctl settings to this file, "
              "for an operator to review and apply (nothing is applied)")
def doctor(config: Path | None, as_json: bool, sysctl_file: Path | None) -> None:
    """Check cgroups, limits, sysctls, ports, Docker, disks, NATS, etcd and Redis.

    Each finding is ok, WARN (works, not as recommended) or FAIL (blocks the agent), with the
    fix. Exits 1 when anything fails, else 0. Limits are this process's own: run it as the
    agent runs (same user, same service manager).
    """
    cfg, loaded = _load(config)
    findings = [loaded]
    if cfg is not None:
        node = make_node()
        if sysctl_file is not None:
            try:
                sysctl_file.write_text(dr.sysctl_text(cfg.container.port_range, node.sysctl))
            except OSError as exc:
                raise click.ClickException(f"cannot write {sysctl_file}: {exc}") from exc
            click.echo(f"wrote the recommended sysctl settings to {sysctl_file} (nothing "
                       "applied; see the file's header)", err=True)
        findings += dr.diagnose(cfg, node)
    code = dr.exit_code(findings)
    if as_json:
        click.echo(json.dumps({
            "ok": code == 0, "exit_code": code,
            "config": str(config or find_config() or "") or None,
            "counts": dr.counts(findings), "findings": [f.to_dict() for f in findings],
        }, indent=2))
    else:
        _print(findings)
    sys.exit(code)
