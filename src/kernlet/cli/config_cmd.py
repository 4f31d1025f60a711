"""``kernlet config show|validate|sample``: the agent's configuration file, read the way the
agent reads it (:func:`kernlet.config.load_config`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kernlet.cli import main
from kernlet.cli._out import emit
from kernlet.config import ConfigError, find_config, load_config
from kernlet.config_toml import masked, render, sample

#: exit status of ``config validate`` (and ``show``) for an invalid file (sysexits EX_CONFIG)
EX_CONFIG = 78

_FILE = click.argument("file", required=False,
                       type=click.Path(dir_okay=False, path_type=Path))
_HELP_FILE = ("FILE defaults to the first of ./agent.toml, ~/.config/kernlet/agent.toml, "
              "/etc/kernlet/agent.toml that exists (none: the defaults).")


@main.group("config")
def config() -> None:
    """The agent's configuration: the effective settings, a check, a commented sample."""


def _load_or_exit(file: Path | None, as_json: bool) -> tuple[Path | None, object]:
    source = file if file is not None else find_config()
    try:
        return source, load_config(source)
    except ConfigError as exc:
        if as_json:
            emit(True, {"path": str(source) if source else None, "ok": False,
                        "errors": [{"key": k, "message": m} for k, m in exc.issues]}, "")
        else:
            for key, message in exc.issues:
                click.echo(f"error: ConfigError: {source}: {key}: {message}", err=True)
        sys.exit(EX_CONFIG)


@config.command("show", epilog=_HELP_FILE)
@_FILE
@click.option("--json", "as_json", is_flag=True,
              help="print {section: {key: value}} as JSON")
def show(file: Path | None, as_json: bool) -> None:
    """The effective configuration: FILE merged over the defaults, as TOML (passwords and
    tokens shown as ***). Exit 78 when the file is invalid."""
    from kernlet.config import AgentConfig

    source, cfg = _load_or_exit(file, as_json)
    assert isinstance(cfg, AgentConfig)
    data = masked(cfg)
    if as_json:
        emit(True, data, "")
        return
    click.echo(f"# effective configuration from {source or 'the defaults (no file found)'}")
    click.echo(render(data, commented=False), nl=False)


@config.command("validate", epilog=_HELP_FILE)
@_FILE
@click.option("--json", "as_json", is_flag=True,
              help='print {"path", "ok", "errors": [{"key", "message"}]} as JSON')
def validate(file: Path | None, as_json: bool) -> None:
    """Check FILE as the agent would at start: every invalid key is named, one a line
    (exit 78); a valid file exits 0. TLS and creds files it names are loaded too."""
    source, _ = _load_or_exit(file, as_json)
    emit(as_json, {"path": str(source) if source else None, "ok": True, "errors": []},
         f"{source or 'no config file found; the defaults'}: valid")


@config.command("sample")
@click.option("--json", "as_json", is_flag=True,
              help="print the defaults as JSON {section: {key: value}} instead of TOML")
def sample_cmd(as_json: bool) -> None:
    """A commented agent.toml with every key at its default, generated from the config
    model (so it lists exactly the keys this version accepts)."""
    from kernlet.config import AgentConfig

    if as_json:
        emit(True, AgentConfig().model_dump(by_alias=True, mode="json"), "")
        return
    click.echo(sample(), nl=False)
