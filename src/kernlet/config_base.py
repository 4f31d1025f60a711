"""The base of every configuration table, and the configuration's error (re-exported by
:mod:`kernlet.config`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigError", "Section"]


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; the message names the key.
    ``issues``: ``(key, message)`` per invalid key (``("(file)", ...)`` when unreadable)."""

    def __init__(self, message: str, issues: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.issues = issues if issues is not None else [("", message)]


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class Section(BaseModel):
    model_config = ConfigDict(
        alias_generator=_kebab, populate_by_name=True, extra="forbid", frozen=True
    )
