"""The agent's logging: text or JSON lines, each record about a kernel or a run carrying
``kernel_id``/``run_id``.

The ids come from context variables, bound where the work for a kernel happens, so that no
log call has to repeat them:

- a kernel actor binds its kernel id on its own pykka thread when it starts
  (:func:`bind`); everything it logs, and every coroutine it hands to the loop
  (``run_coroutine_threadsafe`` copies the calling thread's context into the task), carries it;
- a request that names a kernel binds it while it is decoded and while the agent actor
  handles it (:func:`bound`); a run binds its run id while its events are recorded.

A log call may still pass ``extra={"kernel_id": ...}`` (the agent actor does, for kernels it
handles outside their own actor); an explicit value wins over the context.

Formats: ``text`` puts ``[kernel K run R]`` before the message; ``json`` writes one object a
line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``thread``, ``msg``, ``kernel_id`` and
``run_id`` when known, ``exc`` (the formatted traceback) when there is one.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

__all__ = [
    "KERNEL_ID",
    "LEVELS",
    "RUN_ID",
    "ContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "bind",
    "bound",
    "configure",
]

KERNEL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("kernel_id", default=None)
RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_id", default=None)

LEVELS = ("debug", "info", "warning", "error", "critical")
Format = Literal["text", "json"]

#: libraries whose routine chatter stays out of an info-level log
_QUIET = ("aiosqlite", "aiodocker", "asyncio", "urllib3", "grpc")


def bind(kernel_id: str | None = None, run_id: str | None = None) -> None:
    """Bind ids for the rest of this thread's or task's life (a kernel actor's thread, a
    request's task)."""
    if kernel_id is not None:
        KERNEL_ID.set(kernel_id)
    if run_id is not None:
        RUN_ID.set(run_id)


@contextlib.contextmanager
def bound(kernel_id: str | None = None, run_id: str | None = None) -> Iterator[None]:
    """Bind ids for the duration of a block (None leaves that id as it was)."""
    tokens: list[tuple[contextvars.ContextVar[str | None], contextvars.Token[str | None]]] = []
    if kernel_id is not None:
        tokens.append((KERNEL_ID, KERNEL_ID.set(kernel_id)))
    if run_id is not None:
        tokens.append((RUN_ID, RUN_ID.set(run_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Puts ``kernel_id`` and ``run_id`` on every record (None when unknown); a value given
    with ``extra=`` is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "kernel_id", None) is None:
            record.kernel_id = KERNEL_ID.get()
        if getattr(record, "run_id", None) is None:
            record.run_id = RUN_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,123 INFO kernlet.actors.kernel: [kernel k1 run r1] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib's name
        tags = [f"{name} {value}" for name, value in
                (("kernel", getattr(record, "kernel_id", None)),
                 ("run", getattr(record, "run_id", None))) if value]
        if tags:
            record.message = f"[{' '.join(tags)}] {record.message}"
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line (see the module's docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
                  .isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "thread": record.threadName,
            "msg": record.getMessage(),
        }
        for key in ("kernel_id", "run_id"):
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str = "info", fmt: Format = "text", file: Path | None = None) -> None:
    """Send every logger's records (the agent's and its libraries') to stderr, or to ``file``
    (appended), in ``fmt``; uncaught exceptions of threads and warnings go there too."""
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)
    threading.excepthook = _thread_excepthook
    sys.excepthook = _excepthook


_log = logging.getLogger("kernlet")


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    _log.critical("uncaught exception in thread %s", name,
                  exc_info=(args.exc_type, args.exc_value or args.exc_type(),
                            args.exc_traceback))


def _excepthook(exc_type: type[BaseException], exc: BaseException,
                tb: TracebackType | None) -> None:
    _log.critical("uncaught exception", exc_info=(exc_type, exc, tb))
