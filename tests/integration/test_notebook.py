"""``kernlet notebook run`` against nbclient: the same notebooks, the same outputs.

Each notebook below is executed twice in the same test run: by ``kernlet notebook run`` (a
subprocess, on a kernel container of a real agent) and by nbclient against a local ipykernel
in this venv. After normalising what legitimately differs (execution counts, memory
addresses, timing metadata, the traceback text of two IPython versions, the bytes of a
matplotlib PNG), the cells' outputs must be equal. Adjacent stream outputs are merged on
nbclient's side as a notebook front end shows them (nbclient keeps them apart).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from integration.conftest import IMAGE, NATS_URL, AgentProcess
from kernlet.client import KernletClient
from kernlet.notebook import notebook_outputs

pytestmark = pytest.mark.integration

PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5"
       "ErkJggg==")
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="5" height="5"/></svg>'

#: name -> (cells, per-cell timeout or None). Each needs --allow-errors where it raises.
NOTEBOOKS: dict[str, tuple[list[str], float | None]] = {
    "streams": ([
        "print('a')\nprint('b', end='')\nprint('c', end='')",
        "import sys\nsys.stdout.write('no newline')\nsys.stderr.write('err\\n')\nprint('after')",
        "for i in range(3):\n    print(i, end=' ', flush=True)",
    ], None),
    "unicode": ([
        "print('héllo ✓ 日本語 🎉')",
        "'ünïcødé ↔ ∑'",
    ], None),
    "errors": ([
        "x = 1\nprint('before')",
        "print('about to fail')\n1 / 0",
        "print('after', x)",
        "raise ValueError('bad value')",
        "x + 1",
    ], None),
    "interrupt": ([
        "print('start')",
        "while True:\n    pass",
        "print('usable after the interrupt')",
    ], 6.0),
    "input": ([
        "name = input('name? ')",
        "print('still here')",
    ], None),
    "images": ([
        "import base64\nfrom IPython.display import Image, SVG, display\n"
        f"display(Image(data=base64.b64decode('{PNG}'), width=10))",
        f"SVG('{SVG}')",
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()",
    ], None),
    "html": ([
        "from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))",
        "HTML('<table><tr><td>1</td></tr></table>')",
    ], None),
    "markdown": ([
        "from IPython.display import Markdown, display\ndisplay(Markdown('# Title\\n*x*'))",
        "Markdown('**result**')",
    ], None),
    "latex": ([
        "from IPython.display import Latex, Math, display\ndisplay(Latex(r'$x^2 + y^2$'))",
        "Math(r'\\int_0^1 x\\,dx')",
    ], None),
    "json": ([
        "from IPython.display import JSON, display\ndisplay({'application/json': {'a': [1, 2]},"
        " 'text/plain': 'json'}, raw=True)",
        "display({'text/plain': 'meta'}, raw=True, metadata={'size': [1, 2]})",
        "class Obj:\n    pass\nObj()",
    ], None),
    "display_ids": ([
        "from IPython.display import display, update_display\n"
        "h = display('first', display_id='d1')\ndisplay('other')",
        "update_display('second', display_id='d1')\nprint('updated')",
        "display('third', display_id='d1')",
        "h2 = display('x', display_id=True)\nh2.update('y')",
    ], None),
    "clear_output": ([
        "from IPython.display import clear_output\n"
        "for i in range(3):\n    clear_output(wait=True)\n    print('frame', i)",
        "print('gone')\nclear_output()\nprint('kept')",
        "print('stays')\nclear_output(wait=True)",
    ], None),
    "empty": ([
        "",
        "   \n",
        "print('after empty cells')",
        "# only a comment",
    ], None),
    "sleep": ([
        "import time\nt = time.monotonic()\ntime.sleep(1)\nprint('slept', time.monotonic() - t >= 1)",
    ], None),
}
RAISES = {"errors", "interrupt", "input"}


def make_notebook(cells: list[str]) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("a test notebook")]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def _merge_streams(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = []
    for out in outputs:
        if merged and out["output_type"] == "stream" and merged[-1]["output_type"] == "stream" \
                and merged[-1]["name"] == out["name"]:
            merged[-1]["text"] += out["text"]
        else:
            merged.append(out)
    return merged


def normalise(nb: Any) -> list[list[dict[str, Any]]]:
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outs = []
        for out in _merge_streams(copy.deepcopy([dict(o) for o in cell.get("outputs", [])])):
            out = json.loads(json.dumps(out))
            out.pop("execution_count", None)
            if out["output_type"] == "error":
                out["traceback"] = "<traceback>"  # IPython 8.5 (image) and 9 (venv) differ
            data = out.get("data", {})
            if "image/png" in data:  # the image's ipykernel 6 ends base64 with a newline
                data["image/png"] = "".join(data["image/png"].split())
            if "image/png" in data and data["image/png"] != PNG:
                assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG")
                data["image/png"] = "<a png>"
            text = json.dumps(out)
            outs.append(json.loads(re.sub(r"0x[0-9a-f]{6,}", "0x<addr>", text)))
        cells.append(outs)
    return cells


@pytest.fixture(scope="module")
def agent(halfstack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path_factory.mktemp("agent-nb"), f"test-nb-{uuid.uuid4().hex[:8]}")
    proc.config.write_text(proc.config.read_text().replace(
        "[container]\n", "[container]\nport-range = [32800, 32899]\n", 1))
    proc.start()
    yield proc
    proc.cleanup()


def kernlet_run(agent: AgentProcess, src: Path, dest: Path, *args: str,
                timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kernlet.cli", "notebook", "--config", str(agent.config),
         "run", str(src), "-o", str(dest), "--image", IMAGE, "--json", *args],
        capture_output=True, text=True, timeout=timeout, check=False)


def nbclient_run(nb: Any, workdir: Path, timeout: float | None, allow_errors: bool) -> Any:
    nb = copy.deepcopy(nb)
    NotebookClient(nb, kernel_name="python3", timeout=int(timeout) if timeout else None,
                   interrupt_on_timeout=True, allow_errors=allow_errors,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_outputs_equal_nbclients(name: str, agent: AgentProcess, tmp_path: Path) -> None:
    cells, timeout = NOTEBOOKS[name]
    nb = make_notebook(cells)
    src, dest = tmp_path / f"{name}.ipynb", tmp_path / f"{name}.out.ipynb"
    nbformat.write(nb, str(src))
    args = ["--allow-errors"] if name in RAISES else []
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    res = kernlet_run(agent, src, dest, *args)
    assert res.returncode == 0, res.stderr + res.stdout
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines[-1]["type"] == "result" and lines[-1]["data"]["ok"] is True
    assert len([line for line in lines if line["type"] == "cell"]) == len(cells)
    ours = nbformat.read(str(dest), as_version=4)
    nbformat.validate(ours)  # valid against the nbformat schema
    theirs = nbclient_run(nb, tmp_path, timeout, allow_errors=name in RAISES)
    assert normalise(ours) == normalise(theirs)
    counts = [c.execution_count for c in ours.cells if c.cell_type == "code"]
    expected = [c.execution_count for c in theirs.cells if c.cell_type == "code"]
    assert counts == expected
    assert agent.containers() == []  # the kernel it created is destroyed


def test_stops_at_the_first_error(agent: AgentProcess, tmp_path: Path) -> None:
    nb = make_notebook(["print(1)", "1 / 0", "print('never')"])
    src, dest = tmp_path / "stop.ipynb", tmp_path / "stop.out.ipynb"
    nbformat.write(nb, str(src))
    res = kernlet_run(agent, src, dest)
    assert res.returncode == 1, res.stderr
    ours = nbformat.read(str(dest), as_version=4)
    code = [c for c in ours.cells if c.cell_type == "code"]
    assert code[1].outputs[0]["ename"] == "ZeroDivisionError"
    assert code[2].outputs == [] and code[2].execution_count is None


def test_upload_and_existing_kernel(agent: AgentProcess, tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("uploaded contents\n")
    nb = make_notebook(["print(open('data.txt').read(), end='')"])
    src, dest = tmp_path / "up.ipynb", tmp_path / "up.out.ipynb"
    nbformat.write(nb, str(src))
    created = subprocess.run(
        [sys.executable, "-m", "kernlet.cli", "kernel", "--config", str(agent.config), "create",
         "--image", IMAGE, "--json"], capture_output=True, text=True, check=True, timeout=120)
    kid = json.loads(created.stdout)["id"]
    res = subprocess.run(
        [sys.executable, "-m", "kernlet.cli", "notebook", "--config", str(agent.config), "run",
         str(src), "-o", str(dest), "--kernel", kid, "--upload", str(data)],
        capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    out = nbformat.read(str(dest), as_version=4).cells[1].outputs
    assert out == [{"output_type": "stream", "name": "stdout", "text": "uploaded contents\n"}]
    assert len(agent.containers()) == 1  # a kernel it did not create is kept
    media = tmp_path / "media"
    code = ("import base64\nfrom IPython.display import Image, SVG, display\n"
            f"display(Image(data=base64.b64decode('{PNG}')))\ndisplay(SVG('{SVG}'))")
    res = subprocess.run(
        [sys.executable, "-m", "kernlet.cli", "kernel", "--config", str(agent.config), "exec",
         kid, "--code", code, "--save-media", str(media)],
        capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in media.iterdir()) == ["media-001.png", "media-002.svg"]
    assert (media / "media-001.png").read_bytes() == base64.b64decode(PNG)
    assert (media / "media-002.svg").read_text().startswith("<svg")
    subprocess.run([sys.executable, "-m", "kernlet.cli", "kernel", "--config",
                    str(agent.config), "destroy", kid], capture_output=True, check=True,
                   timeout=120)


STREAMED_CODE = (
    "import sys\nfrom IPython.display import display, clear_output, Markdown\n"
    "print('a', end='')\nprint('b')\nsys.stderr.write('e\\n')\n"
    "h = display(Markdown('*one*'), display_id=True)\n"
    "for i in range(3):\n    clear_output(wait=True)\n    print('frame', i)\n"
    "h.update(Markdown('*two*'))\ndisplay(Markdown('*three*'), display_id=h.display_id)\n"
    "6 * 7"
)


def _without_counts(outs: list[list[dict[str, Any]]]) -> Any:
    """Execution counts out, also from a traceback's ``Cell In [3]``."""
    plain = [[{k: v for k, v in o.items() if k != "execution_count"} for o in run]
             for run in outs]
    return json.loads(re.sub(r"In \[\d+\]", "In [N]", json.dumps(plain)))


async def test_streaming_and_batched_give_the_same_outputs(agent: AgentProcess) -> None:

    async with KernletClient(NATS_URL, agent_id=agent.agent_id, timeout=120) as c:
        kid = str((await c.create_kernel(IMAGE))["id"])
        try:
            runs = []
            for code in (STREAMED_CODE, "1 / 0"):
                batched = await c.execute(kid, code, opts={"output": "jupyter"})
                assert batched["status"] == "finished"
                streamed: list[tuple[str, Any]] = []
                res = await c.run(kid, code, opts={"output": "jupyter"},
                                  on_output=lambda k, d, got=streamed: got.append((k, d)))
                assert res["exitCode"] == batched["exitCode"]
                runs.append(([tuple(item) for item in batched["console"]], streamed))
            for batched_items, streamed_items in runs:
                assert _without_counts(notebook_outputs([batched_items])) == \
                    _without_counts(notebook_outputs([streamed_items]))
            (outs,) = notebook_outputs([runs[0][1]])
            # the first frame's clear (wait) took a, b, e and the first display with it
            assert [o["output_type"] for o in outs] == ["stream", "display_data",
                                                        "execute_result"]
            assert outs[0]["text"] == "frame 2\n"
            assert outs[1]["data"]["text/markdown"] == "*three*"
        finally:
            await c.destroy_kernel(kid)
