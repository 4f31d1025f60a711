"""A kernel's run output rebuilt as a notebook holds it (the manager's side).

A query run executed with ``opts = {"output": "jupyter"}`` sends console items whose types
are Jupyter's iopub message types (docs/protocol.md). :class:`NotebookOutputs` folds them,
run after run of one kernel, into nbformat v4 output lists, the way nbclient and notebook
front ends do:

- ``stream`` text joins the previous output when that is a stream of the same name;
- ``clear_output`` empties the run's outputs at once, or with ``wait`` just before the
  run's next output (a progress display that redraws itself keeps only its last frame);
- ``display_data`` / ``execute_result`` with ``transient.display_id`` are remembered, and a
  later ``update_display_data`` (or another display with that id) replaces the data and
  metadata of every earlier output of that id, in earlier runs too, without adding one;
- ``execute_input`` gives the run's execution count.

Items of the console shape are also taken (``stdout``/``stderr`` as streams, ``media`` and
``html`` as display data), so that a note the agent puts in a run's output (dropped bytes) is
kept. :func:`notebook_outputs` is the one call for a list of runs. Standard library only.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

__all__ = ["NotebookOutputs", "media_files", "notebook_outputs"]

Output = dict[str, Any]

#: File name extensions of the image types saved by :func:`media_files`.
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif",
               "image/svg+xml": "svg"}


class NotebookOutputs:
    """The outputs of one kernel's runs, in order; :meth:`start` begins a run."""

    def __init__(self) -> None:
        #: one nbformat output list per run, in run order
        self.runs: list[list[Output]] = []
        #: each run's execution count (None until its ``execute_input``)
        self.execution_counts: list[int | None] = []
        self._displays: dict[str, list[tuple[int, int]]] = {}  # id -> [(run, output index)]
        self._clear_next = False

    def start(self) -> list[Output]:
        """Begin a run; returns its (live) output list."""
        self.runs.append([])
        self.execution_counts.append(None)
        self._clear_next = False
        return self.runs[-1]

    def add(self, kind: str, data: Any) -> None:
        """One console item of the current run (``start`` must have been called)."""
        if not self.runs:
            raise RuntimeError("NotebookOutputs.add before start")
        if kind == "execute_input":
            count = data.get("execution_count") if isinstance(data, dict) else None
            self.execution_counts[-1] = count if isinstance(count, int) else None
        elif kind == "clear_output":
            if isinstance(data, dict) and data.get("wait"):
                self._clear_next = True
            else:
                self._clear()
        elif kind == "update_display_data":
            self._update(data)
        elif kind in ("stream", "stdout", "stderr"):
            name, text = (str(data.get("name", "stdout")), str(data.get("text", ""))) \
                if isinstance(data, dict) else (kind, str(data))
            self._stream(name, text)
        elif kind in ("display_data", "execute_result"):
            self._display(kind, data)
        elif kind == "error":
            self._append({"output_type": "error", "ename": str(data.get("ename", "")),
                          "evalue": str(data.get("evalue", "")),
                          "traceback": [str(line) for line in data.get("traceback") or []]})
        elif kind == "media" and isinstance(data, dict):
            mime = str(data.get("type", ""))
            payload = str(data.get("data", ""))
            payload = payload.split(",", 1)[1] if payload.startswith("data:") else payload
            self._append({"output_type": "display_data", "data": {mime: payload},
                          "metadata": {}})
        elif kind == "html":
            self._append({"output_type": "display_data", "data": {"text/html": str(data)},
                          "metadata": {}})
        # other items (waiting-input, finished, batch steps) are not outputs

    # -- the folds -------------------------------------------------------------------------

    def _clear(self) -> None:
        run = len(self.runs) - 1
        self.runs[-1].clear()
        for places in self._displays.values():
            places[:] = [p for p in places if p[0] != run]
        self._clear_next = False

    def _append(self, output: Output) -> int:
        if self._clear_next:
            self._clear()
        self.runs[-1].append(output)
        return len(self.runs[-1]) - 1

    def _stream(self, name: str, text: str) -> None:
        outs = self.runs[-1]
        if not self._clear_next and outs and outs[-1]["output_type"] == "stream" \
                and outs[-1]["name"] == name:
            outs[-1]["text"] += text
            return
        self._append({"output_type": "stream", "name": name, "text": text})

    def _display(self, kind: str, content: dict[str, Any]) -> None:
        display_id = _display_id(content)
        if display_id is not None:
            self._update(content)
        output: Output = {"output_type": kind, "data": dict(content.get("data") or {}),
                          "metadata": dict(content.get("metadata") or {})}
        if kind == "execute_result":
            output["execution_count"] = content.get("execution_count")
        index = self._append(output)
        if display_id is not None:
            self._displays.setdefault(display_id, []).append((len(self.runs) - 1, index))

    def _update(self, content: dict[str, Any]) -> None:
        display_id = _display_id(content)
        if display_id is None:
            return
        for run, index in self._displays.get(display_id, []):
            output = self.runs[run][index]
            output["data"] = dict(content.get("data") or {})
            output["metadata"] = dict(content.get("metadata") or {})


def _display_id(content: Any) -> str | None:
    transient = content.get("transient") if isinstance(content, dict) else None
    display_id = transient.get("display_id") if isinstance(transient, dict) else None
    return str(display_id) if display_id is not None else None


def notebook_outputs(runs: Iterable[Iterable[tuple[str, Any] | list[Any]]]) -> list[list[Output]]:
    """The nbformat v4 outputs of each run of one kernel, from each run's console items
    (``[type, data]`` pairs, batched or streamed), in run order."""
    model = NotebookOutputs()
    for items in runs:
        model.start()
        for kind, data in items:
            model.add(kind, data)
    return model.runs


def media_files(kind: str, data: Any) -> list[tuple[str, bytes]]:
    """The images one console item carries, as (extension, bytes): a jupyter-shape display's
    image MIME types, or a console-shape ``media`` item."""
    found: list[tuple[str, bytes]] = []
    if kind in ("display_data", "execute_result", "update_display_data") \
            and isinstance(data, dict):
        bundle = data.get("data") or {}
        for mime, ext in _EXTENSIONS.items():
            if mime in bundle:
                found.append((ext, _decode(mime, bundle[mime])))
    elif kind == "media" and isinstance(data, dict) and data.get("type") in _EXTENSIONS:
        mime = str(data["type"])
        payload = str(data.get("data", ""))
        payload = payload.split(",", 1)[1] if payload.startswith("data:") else payload
        found.append((_EXTENSIONS[mime], _decode(mime, payload)))
    return found


def _decode(mime: str, payload: Any) -> bytes:
    text = "".join(payload) if isinstance(payload, list) else str(payload)
    if mime == "image/svg+xml":
        return text.encode()
    return base64.b64decode(text)
