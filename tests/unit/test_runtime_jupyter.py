"""The runtime's jupyter output shape (``opts.output = "jupyter"``), on a real runtime
process and ipykernel (as tests/unit/test_runtime.py drives them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_runtime import Client, exit_code, launch_runtime

from kernlet.kernel.translate import strip_ansi
from kernlet.notebook import notebook_outputs

JUPYTER = {"output": "jupyter"}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with launch_runtime(tmp_path_factory.mktemp("runtime-jupyter")) as sock:
        yield sock


@pytest.fixture
def client(runtime: str) -> Iterator[Client]:
    c = Client(runtime)
    yield c
    c.close()


def items(msgs: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["t"], m["data"]) for m in msgs if m["t"] != "finished"]


def test_whole_bundle_with_metadata_and_execution_count(client: Client) -> None:
    msgs = client.run(
        "from IPython.display import display, Markdown\n"
        "display(Markdown('**hi**'), metadata={'k': 1})\n"
        "6 * 7", opts=JUPYTER)
    assert exit_code(msgs) == 0
    got = items(msgs)
    kinds = [k for k, _ in got]
    assert kinds == ["execute_input", "display_data", "execute_result"]
    count = got[0][1]["execution_count"]
    assert isinstance(count, int)
    display = got[1][1]
    assert display["data"] == {"text/markdown": "**hi**", "text/plain": "<IPython.core.display.Markdown object>"}
    assert display["metadata"] == {"k": 1}
    assert got[2][1] == {"data": {"text/plain": "42"}, "metadata": {}, "execution_count": count}


def test_display_id_update_and_clear_output(client: Client) -> None:
    first = client.run("h = display('a', display_id=True)", opts=JUPYTER)
    second = client.run(
        "from IPython.display import clear_output\n"
        "h.update('b')\nprint('x')\nclear_output(wait=True)\nprint('y')", opts=JUPYTER)
    kinds = [k for k, _ in items(second)]
    assert kinds == ["execute_input", "update_display_data", "stream", "clear_output", "stream"]
    update = dict(items(second))["update_display_data"]
    assert update["transient"]["display_id"]
    assert update["data"] == {"text/plain": "'b'"}
    outs = notebook_outputs([items(first), items(second)])
    assert outs[0] == [{"output_type": "display_data", "data": {"text/plain": "'b'"},
                        "metadata": {}}]
    assert outs[1] == [{"output_type": "stream", "name": "stdout", "text": "y\n"}]


def test_error_has_ename_evalue_traceback(client: Client) -> None:
    msgs = client.run("print('before')\n1/0", opts=JUPYTER)
    assert exit_code(msgs) == 1
    error = [d for k, d in items(msgs) if k == "error"]
    assert len(error) == 1
    assert error[0]["ename"] == "ZeroDivisionError"
    assert error[0]["evalue"] == "division by zero"
    assert "1/0" in strip_ansi("\n".join(error[0]["traceback"]))  # Jupyter's, colours kept
    assert not [k for k, _ in items(msgs) if k in ("stderr", "stdout")]


def test_console_shape_stays_the_default(client: Client) -> None:
    msgs = client.run("print('a')\n6 * 7")
    assert {m["t"] for m in msgs[:-1]} == {"stdout"}
    assert "".join(m["data"] for m in msgs[:-1]) == "a\n42\n"


def test_unknown_shape_is_refused(client: Client) -> None:
    client.send({"op": "execute", "run_id": "bad-shape", "mode": "query", "code": "1",
                 "opts": {"output": "html"}, "req": 99})
    reply = client.wait_for(lambda m: m.get("t") == "error")
    assert "opts.output" in reply["data"]["message"]
    assert exit_code(client.run("1")) == 0  # the runtime goes on serving


def test_interrupt_is_an_error_output(client: Client) -> None:
    run_id = client.start("print('looping', flush=True)\nwhile True:\n    pass", opts=JUPYTER)
    client.wait_for(lambda m: m.get("run_id") == run_id and m["t"] == "stream")
    client.send({"op": "interrupt"})
    msgs = client.collect(run_id)
    assert exit_code(msgs) == 130
    errors = [d for k, d in items(msgs) if k == "error"]
    assert [e["ename"] for e in errors] == ["KeyboardInterrupt"]
