"""The agent configuration written back as TOML: a commented sample generated from the config
model (``kernlet config sample``), and an effective configuration (``kernlet config show``).

The sample is made from :class:`~kernlet.config.AgentConfig` itself: every section and key
in the model's order, its default, and its comment: the ``#:`` lines above the field in the
source of the model (as Sphinx autodoc reads them) and the section's docstring. A key added to
the model appears in the sample without anyone editing it, so the sample cannot go stale; a
test loads it back and gets the defaults.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import textwrap
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kernlet.config import AgentConfig

__all__ = ["SECRET_KEYS", "comments", "masked", "render", "sample"]

#: keys whose values ``show`` never prints
SECRET_KEYS = frozenset({"password", "token"})
_FIELD = re.compile(r"^\s+(\w+)\s*:")
_WIDTH = 92


@functools.cache
def comments(section: type[BaseModel]) -> dict[str, list[str]]:
    """The ``#:`` comment lines above each field in the source of ``section``."""
    try:
        source = inspect.getsource(section)
    except (OSError, TypeError):
        return {}
    out: dict[str, list[str]] = {}
    pending: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        m = _FIELD.match(line)
        if m and pending:
            out[m.group(1)] = pending
        pending = []
    return out


def _value(v: Any) -> str:
    """One TOML value (strings with JSON escapes, which TOML's basic strings share)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, Path):
        return json.dumps(str(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


def _type_name(annotation: Any) -> str:
    text = str(annotation) if typing.get_origin(annotation) else getattr(
        annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None")


def _comment(text: str) -> list[str]:
    return [f"# {line}".rstrip() for line in textwrap.wrap(text, _WIDTH - 2)] or ["#"]


def render(values: dict[str, dict[str, Any]], *, commented: bool,
           computed: bool = False) -> str:
    """TOML for ``{section alias: {key alias: value}}`` in the model's order; None values
    are written as a commented-out key. ``commented`` adds each key's comment; ``computed``
    comments out keys whose default is computed (e.g. from the host name)."""
    lines: list[str] = []
    for name, info in AgentConfig.model_fields.items():
        alias = info.alias or name.replace("_", "-")
        if typing.get_origin(info.annotation) is dict:  # a table of tables: [registries."x"]
            if lines:
                lines.append("")
            lines.extend(_tables(alias, info, values.get(alias, {}), commented))
            continue
        section = info.annotation
        assert isinstance(section, type) and issubclass(section, BaseModel)
        table = values.get(alias, {})
        if lines:
            lines.append("")
        if commented and section.__doc__ and not section.__doc__.startswith(
                ("Create a new model", "Usage docs")):
            lines.extend(_comment(" ".join(section.__doc__.split())))
        lines.append(f"[{alias}]")
        notes = comments(section)
        for field, finfo in section.model_fields.items():
            key = finfo.alias or field.replace("_", "-")
            if key not in table:
                continue
            if commented:
                for text in notes.get(field, []):
                    lines.extend(_comment(text))
            v = table[key]
            if finfo.default_factory is not None and computed:
                lines.append(f"# {key} = {_value(v)}  (computed at start when unset)")
            elif v is None:
                lines.append(f"# {key} = ...  ({_type_name(finfo.annotation)}; unset)")
            else:
                lines.append(f"{key} = {_value(v)}")
    return "\n".join(lines) + "\n"


def _tables(alias: str, info: Any, tables: dict[str, dict[str, Any]],
            commented: bool) -> list[str]:
    """``[alias."name"]`` per entry; with none, a commented-out example of one."""
    model = typing.get_args(info.annotation)[1]
    lines: list[str] = []
    if commented and info.description:
        lines.extend(_comment(info.description))
    if not tables:
        lines.append(f'# [{alias}."NAME"]')
        for field, finfo in model.model_fields.items():
            key = finfo.alias or field.replace("_", "-")
            lines.append(f"# {key} = ...  ({_type_name(finfo.annotation)})")
        return lines
    for entry, table in tables.items():
        lines.append(f"[{alias}.{json.dumps(entry)}]")
        lines.extend(f"{k} = {_value(v)}" for k, v in table.items() if v is not None)
    return lines


def sample() -> str:
    """A commented agent.toml with every key at its default."""
    head = ("# kernlet agent configuration: every key with its default (generated from the\n"
            "# config model by `kernlet config sample`; docs/configuration.md). Sizes take\n"
            "# 512m, 1g...; unknown keys are errors.\n\n")
    return head + render(AgentConfig().model_dump(by_alias=True), commented=True,
                         computed=True)


def masked(cfg: AgentConfig) -> dict[str, dict[str, Any]]:
    """The configuration as ``{section: {key: value}}`` with secrets replaced by ``***``
    (and passwords in URLs)."""
    data: dict[str, dict[str, Any]] = cfg.model_dump(by_alias=True, mode="json")
    for table in data.values():
        for key, v in table.items():
            if key in SECRET_KEYS and v is not None:
                table[key] = "***"
            elif isinstance(v, str) and "://" in v and "@" in v:
                table[key] = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", v)
    return data
