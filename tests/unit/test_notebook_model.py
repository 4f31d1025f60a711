"""kernlet.notebook: console items of runs folded into nbformat outputs as nbclient does."""

from __future__ import annotations

import base64

import nbformat
import pytest

from kernlet.errors import InvalidRequest
from kernlet.notebook import NotebookOutputs, media_files, notebook_outputs
from kernlet.protocol import parse_request


def stream(text: str, name: str = "stdout") -> tuple[str, dict[str, str]]:
    return ("stream", {"name": name, "text": text})


def display(text: str, display_id: str | None = None) -> tuple[str, dict[str, object]]:
    content: dict[str, object] = {"data": {"text/plain": text}, "metadata": {}}
    if display_id is not None:
        content["transient"] = {"display_id": display_id}
    return ("display_data", content)


def test_adjacent_streams_merge_by_name() -> None:
    (outs,) = notebook_outputs([[stream("a"), stream("b\n"), stream("e", "stderr"),
                                 stream("c")]])
    assert [(o["name"], o["text"]) for o in outs] == [("stdout", "ab\n"), ("stderr", "e"),
                                                      ("stdout", "c")]


def test_clear_output_now_and_at_the_next_output() -> None:
    (outs,) = notebook_outputs([[stream("old"), ("clear_output", {"wait": False}),
                                 stream("x"), ("clear_output", {"wait": True}), stream("y")]])
    assert outs == [{"output_type": "stream", "name": "stdout", "text": "y"}]
    (outs,) = notebook_outputs([[stream("kept"), ("clear_output", {"wait": True})]])
    assert outs[0]["text"] == "kept"  # no next output: nothing cleared


def test_update_display_data_reaches_earlier_runs_and_adds_nothing() -> None:
    first, second = notebook_outputs([
        [display("one", "d"), display("other")],
        [("update_display_data", {"data": {"text/plain": "two"}, "metadata": {"m": 1},
                                  "transient": {"display_id": "d"}})],
    ])
    assert first[0] == {"output_type": "display_data", "data": {"text/plain": "two"},
                        "metadata": {"m": 1}}
    assert first[1]["data"] == {"text/plain": "other"}
    assert second == []


def test_a_display_with_a_known_id_updates_and_is_added() -> None:
    first, second = notebook_outputs([[display("one", "d")], [display("three", "d")]])
    assert first[0]["data"] == second[0]["data"] == {"text/plain": "three"}


def test_cleared_display_is_not_updated_any_more() -> None:
    model = NotebookOutputs()
    model.start()
    model.add(*display("one", "d"))
    model.add("clear_output", {"wait": False})
    model.add(*stream("s"))
    model.add("update_display_data", {"data": {"text/plain": "two"}, "metadata": {},
                                      "transient": {"display_id": "d"}})
    assert model.runs == [[{"output_type": "stream", "name": "stdout", "text": "s"}]]


def test_result_error_and_execution_count_are_valid_nbformat() -> None:
    model = NotebookOutputs()
    model.start()
    model.add("execute_input", {"execution_count": 3})
    model.add("execute_result", {"data": {"text/plain": "42"}, "metadata": {},
                                 "execution_count": 3})
    model.add("error", {"ename": "E", "evalue": "v", "traceback": ["t"]})
    model.add("waiting-input", {"prompt": ""})  # not an output
    assert model.execution_counts == [3]
    cell = nbformat.v4.new_code_cell("6 * 7", execution_count=3,
                                     outputs=[nbformat.from_dict(o) for o in model.runs[0]])
    nb = nbformat.v4.new_notebook(cells=[cell])
    nbformat.validate(nb)
    assert [o["output_type"] for o in model.runs[0]] == ["execute_result", "error"]


def test_console_shape_items_are_outputs_too() -> None:
    (outs,) = notebook_outputs([[("stdout", "a"), ("stderr", "b"), ("html", "<b>x</b>"),
                                 ("media", {"type": "image/png",
                                            "data": "data:image/png;base64,AAAA"})]])
    assert [o["output_type"] for o in outs] == ["stream", "stream", "display_data",
                                                "display_data"]
    assert outs[3]["data"] == {"image/png": "AAAA"}


def test_media_files_from_both_shapes() -> None:
    png = base64.b64encode(b"\x89PNG fake").decode()
    assert media_files("display_data", {"data": {"image/png": png + "\n",
                                                 "image/svg+xml": "<svg/>"}}) == [
        ("png", b"\x89PNG fake"), ("svg", b"<svg/>")]
    assert media_files("media", {"type": "image/png",
                                 "data": f"data:image/png;base64,{png}"}) == [
        ("png", b"\x89PNG fake")]
    assert media_files("stream", {"name": "stdout", "text": "x"}) == []


def test_execute_opts_output_and_stdin_are_validated() -> None:
    ok = parse_request("execute", {"kernel_id": "k", "run_id": "r",
                                   "opts": {"output": "jupyter", "stdin": "refuse"}})
    assert ok.opts == {"output": "jupyter", "stdin": "refuse"}  # type: ignore[attr-defined]
    for bad in ({"output": "html"}, {"stdin": "maybe"}):
        with pytest.raises(InvalidRequest, match=f"opts.{next(iter(bad))}"):
            parse_request("execute", {"kernel_id": "k", "run_id": "r", "opts": bad})
    batch = parse_request("execute", {"kernel_id": "k", "run_id": "r", "mode": "batch",
                                      "opts": {"exec": "true"}})
    assert batch.opts == {"exec": "true"}  # type: ignore[attr-defined]
