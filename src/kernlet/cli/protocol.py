"""``kernlet protocol schema``: the manager protocol's request schemas as JSON Schema,
generated from the pydantic models that validate them (kernlet.protocol)."""

from __future__ import annotations

import json

import click

from kernlet.cli import main
from kernlet.protocol import COMMANDS, json_schema


@main.group("protocol")
def protocol() -> None:
    """The manager protocol over NATS (docs/protocol.md)."""


@protocol.command("schema")
@click.argument("command", required=False, type=click.Choice(sorted(COMMANDS)))
def schema(command: str | None) -> None:
    """Print the JSON Schema of COMMAND's request, or of every command's (with the reply
    envelope) when no COMMAND is given."""
    click.echo(json.dumps(json_schema(command), indent=2, sort_keys=True))
