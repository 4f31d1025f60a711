"""The runtime's jupyter output shape (``opts.output = "jupyter"``), on a real runtime
process and ipykernel (as tests/unit/test_runtime.py drives them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_runtime import SRC, Client, exit_code, launch_runtime

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


def _spec_dir(base: Path) -> Path:
    spec = base / "jupyter" / "kernels" / "kernlet-test-spec"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "from a kernelspec", "language": "python",
        "env": {"KERNLET_SPEC_MARK": "started-from-the-spec"},
    }))
    return base / "jupyter"


def test_the_kernelspec_named_by_the_environment_is_started(tmp_path: Path) -> None:
    env = {"KERNLET_JUPYTER_KERNEL": "kernlet-test-spec", "JUPYTER_PATH": str(_spec_dir(tmp_path))}
    (tmp_path / "rt").mkdir()
    with launch_runtime(tmp_path / "rt", environ=env) as sock:
        c = Client(sock)
        try:
            msgs = c.run("import os; print(os.environ.get('KERNLET_SPEC_MARK'))")
            assert [m["data"] for m in msgs if m["t"] == "stdout"] == ["started-from-the-spec\n"]
            assert c.request("status")["data"]["runtime"] == "python"
        finally:
            c.close()


def test_a_missing_kernelspec_is_reported(tmp_path: Path) -> None:
    sock = tmp_path / "runtime.sock"
    env = dict(os.environ, PYTHONPATH=str(SRC), KERNLET_JUPYTER_KERNEL="no-such-spec",
               JUPYTER_PATH=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "kernlet.kernel", "--socket", str(sock),
                             "--workdir", str(tmp_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "no status with an error"
            if sock.exists():
                try:
                    c = Client(str(sock))
                except ConnectionRefusedError:
                    time.sleep(0.1)
                    continue
                status = c.request("status")["data"]
                c.close()
                if status["error"]:
                    break
            time.sleep(0.1)
        assert status["ready"] is False
        assert "no-such-spec" in status["error"]
    finally:
        proc.terminate()
        proc.wait(15)
