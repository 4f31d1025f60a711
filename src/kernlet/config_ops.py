"""The operators' tables: ``[watcher]`` (the HTTP endpoint), ``[logging]`` (the agent's own
log) and ``[debug]`` (fault injection). Re-exported by :mod:`kernlet.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from kernlet.config_base import Section
from kernlet.config_values import parse_origin

__all__ = ["DebugSection", "LoggingSection", "WatcherSection"]


class WatcherSection(Section):
    """The operators' HTTP endpoint served by the watcher actor inside the agent."""

    enabled: bool = True
    host: str = "127.0.0.1"
    #: 0 picks a free port (tests); the reference uses 6009
    port: int = Field(default=6009, ge=0, le=65535)
    #: token required by the operations (header X-Kernlet-Token); None disables operations
    token: str | None = None
    #: origins besides the watcher's own whose pages may send operations (a browser's Origin
    #: header); canonical ``scheme://host:port``. A string is a comma-separated list (etcd).
    allowed_origins: tuple[str, ...] = ()

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [part for part in v.split(",") if part.strip()]
        if isinstance(v, (list, tuple)):
            return tuple(parse_origin(o) if isinstance(o, str) else o for o in v)
        return v


class LoggingSection(Section):
    """The agent's own log (see kernlet.logs): level, text or JSON lines, stderr or a file."""

    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    #: "text": human lines with a [kernel K run R] prefix; "json": one object a line
    format: Literal["text", "json"] = "text"
    #: append to this file instead of writing to stderr
    file: Path | None = None


class DebugSection(Section):
    """Fault injection for tests and drills; never enable in production."""

    #: accept the debug_fault command (makes a kernel actor raise)
    fault_injection: bool = False
    #: exit the agent process abruptly (like SIGKILL) right after an event of this type is
    #: durable; "type:N" waits for the N-th such event
    crash_after: str | None = None
