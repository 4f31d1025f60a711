"""The one output helper of the CLI: JSON documents, JSON lines, tables, ISO-8601 times.

Tables go through rich. On a terminal they fit its width; piped (not a terminal) they are
plain columns without borders or colour, never wrapped or cut, so ``grep``/``awk`` see
whole rows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["console", "emit", "iso", "json_line", "table"]

#: width for piped output: wide enough that no row is wrapped
_PIPE_WIDTH = 100_000


def console(err: bool = False) -> Console:
    stream = sys.stderr if err else sys.stdout
    if stream.isatty():
        return Console(file=stream)
    return Console(file=stream, width=_PIPE_WIDTH, no_color=True, highlight=False,
                   soft_wrap=True)


def iso(ts: Any) -> str:
    """An epoch time (seconds) as ISO-8601 UTC with milliseconds; '' for none."""
    if ts is None or ts == "":
        return ""
    try:
        value = float(ts)
    except (TypeError, ValueError):
        return str(ts)
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds")


def json_line(data: Any) -> None:
    """One JSON document on one line (for streamed output: JSON lines)."""
    click.echo(json.dumps(data, default=str, separators=(",", ":")))


def emit(as_json: bool, data: Any, text: str) -> None:
    """``data`` as indented JSON, or ``text``."""
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None,
          ) -> None:
    """Print rows under the column headers (the one way the CLI prints tables)."""
    out = console()
    piped = not sys.stdout.isatty()
    t = Table(box=None if piped else box.SIMPLE_HEAD, title=title, title_justify="left",
              show_edge=False, pad_edge=False, header_style="" if piped else "bold")
    for c in columns:
        t.add_column(c, overflow="fold" if not piped else "ignore", no_wrap=piped)
    for row in rows:
        t.add_row(*(Text("" if v is None else str(v)) for v in row))
    if not piped:
        out.print(t)
        return
    with out.capture() as cap:
        out.print(t)
    for line in cap.get().splitlines():  # rich pads every cell; piped rows end at their text
        click.echo(line.rstrip())
