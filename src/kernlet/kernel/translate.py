"""Jupyter messages of one query run, translated into kernlet's run messages.

Pure translation: a :class:`Run` holds what one execute request has seen, and the functions
here turn the kernel's iopub, stdin and shell messages for it into ``emit(kind, data)`` calls
and the run's exit code. Two shapes: ``console`` (the reference's: ``stdout``, ``stderr``,
``media``, ``html``, ``waiting-input``), and ``jupyter`` (the iopub message types
themselves, ``stream``, ``display_data``, ``execute_result``, ``update_display_data``,
``clear_output``, ``error``, ``execute_input``, each with Jupyter's content; and
``waiting-input``).
Which run a message belongs to is decided by the caller (:mod:`kernlet.kernel.query`).
Standard library only.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "EXIT_INTERRUPTED",
    "JUPYTER_TYPES",
    "SHAPES",
    "Emit",
    "Run",
    "emit_data",
    "exit_code",
    "on_input_request",
    "on_iopub",
    "strip_ansi",
]

Emit = Callable[[str, Any], None]

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
#: Interrupted runs finish with this exit code (128 + SIGINT, like a shell).
EXIT_INTERRUPTED = 130
#: The output shapes of a query run (``opts.output``); the first is the default.
SHAPES = ("console", "jupyter")
#: iopub message types sent as they are in the jupyter shape, with the content keys kept.
JUPYTER_TYPES: dict[str, tuple[str, ...]] = {
    "stream": ("name", "text"),
    "display_data": ("data", "metadata", "transient"),
    "update_display_data": ("data", "metadata", "transient"),
    "execute_result": ("data", "metadata", "execution_count"),
    "clear_output": ("wait",),
    "error": ("ename", "evalue", "traceback"),
    "execute_input": ("execution_count",),
}


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class Run:
    """One execute request on the kernel."""

    def __init__(self, run_id: str, msg_id: str, emit: Emit, shape: str = "console") -> None:
        self.run_id = run_id
        self.msg_id = msg_id
        self.emit = emit
        #: "console" or "jupyter" (see the module's docstring)
        self.shape = shape
        loop = asyncio.get_running_loop()
        self.reply: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.idle = asyncio.Event()
        self.interrupted = False
        self.waiting_input: dict[str, Any] | None = None
        self.error_seen = False


    def stream(self, name: str, text: str) -> None:
        """Stream text in the run's shape."""
        if self.shape == "jupyter":
            self.emit("stream", {"name": name, "text": text})
        else:
            self.emit("stderr" if name == "stderr" else "stdout", text)


def on_iopub(run: Run, kind: str, content: dict[str, Any]) -> None:
    """An iopub message whose parent is ``run``'s execute request."""
    if kind == "status" and content.get("execution_state") == "idle":
        run.idle.set()
        return
    if run.shape == "jupyter":
        keys = JUPYTER_TYPES.get(kind)
        if keys is not None:
            run.error_seen = run.error_seen or kind == "error"
            run.emit(kind, {key: content[key] for key in keys if key in content})
        return
    if kind == "stream":
        run.emit("stderr" if content.get("name") == "stderr" else "stdout", content["text"])
    elif kind in ("display_data", "execute_result", "update_display_data"):
        emit_data(run, content.get("data", {}))
    elif kind == "error":
        run.error_seen = True
        text = "\n".join(content.get("traceback") or [])
        if not text:
            text = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"
        run.emit("stderr", strip_ansi(text) + "\n")


def emit_data(run: Run, data: dict[str, Any]) -> None:
    """The richest representation only: png, jpeg, gif, svg, html, then plain text."""
    for mime in ("image/png", "image/jpeg", "image/gif"):
        if mime in data:
            payload = str(data[mime]).replace("\n", "")
            run.emit("media", {"type": mime, "data": f"data:{mime};base64,{payload}"})
            return
    if "image/svg+xml" in data:
        run.emit("media", {"type": "image/svg+xml", "data": str(data["image/svg+xml"])})
        return
    if "text/html" in data:
        run.emit("html", str(data["text/html"]))
        return
    text = data.get("text/plain")
    if text is not None:
        run.emit("stdout", str(text) + "\n")


def on_input_request(run: Run, content: dict[str, Any]) -> None:
    """The kernel asks for input (``input()``, ``getpass``): a ``waiting-input`` message."""
    request = {
        "is_password": bool(content.get("password", False)),
        "prompt": str(content.get("prompt", "")),
    }
    run.waiting_input = request
    run.emit("waiting-input", request)


def exit_code(run: Run, reply: dict[str, Any]) -> int:
    """The run's exit code from the content of its ``execute_reply`` (0 ok, 1 error, 130
    interrupted); pager payloads are sent as stdout, and a traceback that no iopub ``error``
    carried as stderr."""
    status = reply.get("status")
    for item in reply.get("payload") or []:
        if item.get("source") == "page" and run.shape == "console":
            text = item.get("data", {}).get("text/plain")
            if text:
                run.emit("stdout", strip_ansi(str(text)) + "\n")
    if status == "ok":
        return 0
    if run.interrupted and (status == "aborted" or reply.get("ename") == "KeyboardInterrupt"):
        return EXIT_INTERRUPTED
    if status == "error" and not run.error_seen:
        if run.shape == "jupyter":
            run.emit("error", {"ename": str(reply.get("ename", "Error")),
                               "evalue": str(reply.get("evalue", "")),
                               "traceback": list(reply.get("traceback") or [])})
            return 1
        text = "\n".join(reply.get("traceback") or []) or reply.get("evalue", "")
        run.emit("stderr", strip_ansi(str(text)) + "\n")
    return 1
