"""The in-container runtime, end to end: a real runtime process with a real ipykernel,
driven over its unix socket with the codec, as the agent drives it.

The runtime runs under ``$KERNLET_TEST_RUNTIME_PYTHON`` (default: this interpreter), with
PYTHONPATH set to this checkout's src/ as in a container. Pointing it at Debian bookworm's
/usr/bin/python3 (with python3-ipykernel, python3-jupyter-client, python3-msgpack,
python3-matplotlib installed) tests the exact stack of the kernel image. With
``$KERNLET_TEST_RUNTIME_SOCKET``, most tests talk to a runtime started elsewhere instead (for
example in a kernel container: see docs/runtime.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernlet.events.codec import FrameReader, frame, pack
from kernlet.kernel.__main__ import start_timeout_from_env
from kernlet.kernel.batch import READ_SIZE
from kernlet.kernel.query import COMPLETE_TIMEOUT, CompletionFailed, QueryEngine
from kernlet.kernel.server import Runtime
from kernlet.layout import CREATE_TIMEOUT_KEY, DEFAULT_START_TIMEOUT, START_TIMEOUT_ENV

SRC = Path(__file__).resolve().parents[2] / "src"
PYTHON = os.environ.get("KERNLET_TEST_RUNTIME_PYTHON", sys.executable)
#: The socket of a runtime started elsewhere (e.g. in a kernel container) to test instead.
EXTERNAL = os.environ.get("KERNLET_TEST_RUNTIME_SOCKET")

# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

Msg = dict[str, Any]


class Client:
    """A blocking agent-side connection."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.reader = FrameReader()
        self.inbox: list[Msg] = []
        self._req = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, msg: Msg) -> None:
        self.sock.sendall(frame(msg))

    def recv(self, timeout: float = 20.0) -> Msg:
        deadline = time.monotonic() + timeout
        while not self.inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the runtime")
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("the runtime closed the connection")
            self.inbox += self.reader.feed(data)
        return self.inbox.pop(0)

    def wait_for(self, pred: Callable[[Msg], bool], timeout: float = 20.0) -> Msg:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if pred(msg):
                return msg

    def request(self, op: str, **fields: Any) -> Msg:
        self._req += 1
        req = self._req
        self.send({"op": op, "req": req, **fields})
        return self.wait_for(lambda m: m.get("req") == req and "run_id" not in m)

    def start(self, code: str | None = None, **fields: Any) -> str:
        run_id = fields.pop("run_id", None) or uuid.uuid4().hex
        msg: Msg = {"op": "execute", "run_id": run_id, "mode": "query", **fields}
        if code is not None:
            msg["code"] = code
        self.send(msg)
        return run_id

    def collect(self, run_id: str, timeout: float = 30.0) -> list[Msg]:
        """This run's messages up to and including its "finished"."""
        out: list[Msg] = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if msg.get("run_id") != run_id:
                continue
            out.append(msg)
            if msg["t"] == "finished":
                return out

    def run(self, code: str | None = None, **fields: Any) -> list[Msg]:
        return self.collect(self.start(code, **fields))


def text(msgs: list[Msg], kind: str) -> str:
    return "".join(m["data"] for m in msgs if m["t"] == kind)


def exit_code(msgs: list[Msg]) -> int:
    assert msgs[-1]["t"] == "finished"
    code = msgs[-1]["data"]["exitCode"]
    assert isinstance(code, int)
    return code


@contextlib.contextmanager
def launch_runtime(
    base: Path,
    bootstrap: str | None = None,
    args: tuple[str, ...] = (),
    environ: dict[str, str] | None = None,
) -> Iterator[str]:
    """A runtime process serving on BASE/runtime.sock, ready; stopped (SIGTERM) on exit.

    With ``bootstrap``, it starts through runner/entrypoint.sh as in a container, with that
    text as the work dir's .kernlet-bootstrap.sh. ``environ`` is added to its environment.
    """
    work = base / "work"
    work.mkdir()
    sock = base / "runtime.sock"
    env = dict(os.environ, PYTHONPATH=str(SRC), HOME=str(work))
    env.pop("MPLBACKEND", None)
    env.pop(START_TIMEOUT_ENV, None)
    env.update(environ or {})
    cmd = [PYTHON, "-m", "kernlet.kernel", "--socket", str(sock), "--workdir", str(work), *args]
    if bootstrap is not None:
        (work / ".kernlet-bootstrap.sh").write_text(bootstrap)
        env.pop("PYTHONPATH")
        env.update(
            KERNLET_LIB=str(SRC),
            KERNLET_SOCKET=str(sock),
            KERNLET_WORKDIR=str(work),
            KERNLET_PYTHON=PYTHON,
        )
        cmd = ["/bin/sh", str(SRC / "kernlet" / "runner" / "entrypoint.sh")]
    log_path = base / "runtime.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log_path.read_text()
                if sock.exists():
                    try:
                        client = Client(str(sock))
                    except ConnectionRefusedError:  # bound, not listening yet
                        pass
                    else:
                        status = client.request("status")
                        client.close()
                        if status["data"]["ready"]:
                            break
                assert time.monotonic() < deadline, "the runtime did not become ready"
                time.sleep(0.1)
            yield str(sock)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log_path.read_text()
    assert not sock.exists(), "the runtime removes its socket on exit"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if EXTERNAL:
        yield EXTERNAL
        return
    with launch_runtime(tmp_path_factory.mktemp("runtime")) as sock:
        yield sock


@pytest.fixture
def client(runtime: str) -> Iterator[Client]:
    c = Client(runtime)
    yield c
    c.close()


def test_status_and_ping(client: Client, runtime: str) -> None:
    status = client.request("status")
    assert status["t"] == "status"
    data = status["data"]
    assert data["ready"] is True
    assert data["busy"] is None
    assert data["runtime"] == "python"
    assert isinstance(data["pid"], int) and data["pid"] > 0
    assert isinstance(data["version"], str)
    assert client.request("ping") == {"t": "pong", "req": client._req}
    assert Path(runtime).stat().st_mode & 0o777 == 0o666
    if not EXTERNAL:  # started without KERNLET_START_TIMEOUT: the default window
        assert data["start_timeout"] == DEFAULT_START_TIMEOUT


def test_stdout_stderr_and_result(client: Client) -> None:
    msgs = client.run("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n6 * 7")
    assert exit_code(msgs) == 0
    assert text(msgs, "stdout") == "hello\n42\n"
    assert text(msgs, "stderr") == "oops\n"
    seqs = [m["seq"] for m in msgs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_exception_gives_traceback_and_exit_1(client: Client) -> None:
    msgs = client.run("def f():\n    return 1 / 0\nf()")
    assert exit_code(msgs) == 1
    err = text(msgs, "stderr")
    assert "ZeroDivisionError" in err and "division by zero" in err
    assert "return 1 / 0" in err
    assert "\x1b" not in err
    # The kernel is fine afterwards.
    assert text(client.run("print('after')"), "stdout") == "after\n"


def test_rich_output(client: Client) -> None:
    code = (
        "from IPython.display import display, Image, SVG, HTML\n"
        f"display(Image(data={PNG!r}))\n"
        'display(SVG(\'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>\'))\n'
        "display(HTML('<b>bold</b>'))\n"
    )
    msgs = client.run(code)
    assert exit_code(msgs) == 0
    media = [m["data"] for m in msgs if m["t"] == "media"]
    assert [m["type"] for m in media] == ["image/png", "image/svg+xml"]
    prefix = "data:image/png;base64,"
    assert media[0]["data"].startswith(prefix)
    assert base64.b64decode(media[0]["data"][len(prefix) :]) == PNG
    assert media[1]["data"].startswith("<svg")
    assert text(msgs, "html") == "<b>bold</b>"


def test_matplotlib_plot_gives_png(client: Client) -> None:
    probe = client.run(
        "import importlib.util\nprint(importlib.util.find_spec('matplotlib') is not None)"
    )
    if text(probe, "stdout").strip() != "True":
        pytest.skip("matplotlib is not installed for the runtime's Python")
    msgs = client.run("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    assert exit_code(msgs) == 0, text(msgs, "stderr")
    media = [m["data"] for m in msgs if m["t"] == "media"]
    assert len(media) == 1 and media[0]["type"] == "image/png"
    png = base64.b64decode(media[0]["data"].split(",", 1)[1])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_input_round_trip(client: Client) -> None:
    run_id = client.start("name = input('who? ')\nprint('hello', name)")
    req = client.wait_for(lambda m: m["t"] == "waiting-input")
    assert req["run_id"] == run_id
    assert req["data"] == {"is_password": False, "prompt": "who? "}
    assert client.request("status")["data"]["waiting_input"]["run_id"] == run_id
    client.send({"op": "input", "run_id": run_id, "text": "bob"})
    msgs = client.collect(run_id)
    assert exit_code(msgs) == 0
    assert "hello bob\n" in text(msgs, "stdout")

    run_id = client.start("import getpass\nsecret = getpass.getpass('pw: ')\nprint(len(secret))")
    req = client.wait_for(lambda m: m["t"] == "waiting-input")
    assert req["data"] == {"is_password": True, "prompt": "pw: "}
    client.send({"op": "input", "run_id": run_id, "text": "hunter2"})
    msgs = client.collect(run_id)
    assert exit_code(msgs) == 0 and text(msgs, "stdout").endswith("7\n")


def test_input_without_request_is_an_error(client: Client) -> None:
    reply = client.request("input", run_id="nope", text="x")
    assert reply["t"] == "error" and "not running" in reply["data"]["message"]


@pytest.mark.parametrize(
    "body",
    ["time.sleep(100)", "while True:\n    pass"],
    ids=["sleep", "busy-loop"],
)
def test_interrupt_keeps_the_kernel_and_its_variables(client: Client, body: str) -> None:
    assert exit_code(client.run("kept = 41 + 1")) == 0
    run_id = client.start(f"import time\nprint('started', flush=True)\n{body}")
    client.wait_for(lambda m: m.get("run_id") == run_id and m["t"] == "stdout")
    assert client.request("status")["data"]["busy"] == run_id
    started = time.monotonic()
    client.send({"op": "interrupt"})
    msgs = client.collect(run_id, timeout=10)
    assert time.monotonic() - started < 5
    assert exit_code(msgs) == 130
    assert "KeyboardInterrupt" in text(msgs, "stderr")
    assert text(client.run("print(kept)"), "stdout") == "42\n"


def test_interrupt_while_waiting_for_input(client: Client) -> None:
    run_id = client.start("input('never answered: ')")
    client.wait_for(lambda m: m["t"] == "waiting-input")
    client.send({"op": "interrupt"})
    msgs = client.collect(run_id, timeout=10)
    assert exit_code(msgs) == 130
    assert client.request("status")["data"]["waiting_input"] is None
    assert text(client.run("print('still here')"), "stdout") == "still here\n"


#: Runs IPython's completer in the kernel once. A kernel's first completion is cold (jedi
#: parses the module and its stubs): 4-8 s on a loaded 2-core machine, close to the runtime's
#: window (a miss is an error reply, see the tests below); this makes the test independent of
#: the machine's load. An execute has no window.
WARM_COMPLETER = (
    "from IPython.core.completer import provisionalcompleter\n"
    "with provisionalcompleter():\n"
    "    _warm = list(get_ipython().Completer.completions('import os; os.pa', 16))\n"
    "del _warm"
)


def test_completion(client: Client) -> None:
    assert exit_code(client.run(WARM_COMPLETER)) == 0
    src = "import os; os.pa"
    reply = client.request("complete", text=src)
    assert reply["t"] == "completion", reply  # an error says why the kernel gave none
    data = reply["data"]
    completed = {
        src[: data["cursor_start"]] + m + src[data["cursor_end"] :] for m in data["matches"]
    }
    assert "import os; os.path" in completed
    # With an explicit cursor position in the middle of the text.
    reply = client.request("complete", text="import os; os.pa + 1", pos=len(src))
    data = reply["data"]
    assert any(m.endswith("path") for m in data["matches"])
    assert data["cursor_end"] == len(src)


def test_completion_while_code_runs_is_empty_and_immediate(client: Client) -> None:
    run_id = client.start("import time\nprint('go', flush=True)\ntime.sleep(1)")
    client.wait_for(lambda m: m.get("run_id") == run_id and m["t"] == "stdout")
    started = time.monotonic()
    reply = client.request("complete", text="import os; os.pa")
    assert time.monotonic() - started < 0.5
    assert reply["data"] == {"matches": [], "cursor_start": 16, "cursor_end": 16}
    assert exit_code(client.collect(run_id)) == 0


def test_batch_build_and_exec(client: Client) -> None:
    msgs = client.run(
        mode="batch",
        opts={
            "clean": "echo cleaning",
            "build": "echo building",
            "exec": "echo out; echo err >&2; exit 5",
        },
    )
    kinds = [m["t"] for m in msgs if m["t"] not in ("stdout", "stderr")]
    assert kinds == ["clean-finished", "build-finished", "finished"]
    assert msgs[-1]["data"] == {"exitCode": 5}
    assert text(msgs, "stdout") == "cleaning\nbuilding\nout\n"
    assert text(msgs, "stderr") == "err\n"
    assert all(m["data"] == {"exitCode": 0} for m in msgs if m["t"].endswith("-finished"))


def test_batch_build_failure_skips_exec(client: Client, runtime: str) -> None:
    msgs = client.run(
        mode="batch", opts={"clean": None, "build": "echo nope; exit 3", "exec": "echo ran"}
    )
    assert [m["t"] for m in msgs if m["t"] not in ("stdout", "stderr")] == [
        "build-finished",
        "finished",
    ]
    assert msgs[-2]["data"] == {"exitCode": 3}
    assert exit_code(msgs) == 127
    assert text(msgs, "stdout") == "nope\n"


def test_batch_runs_in_workdir_and_decodes_utf8_incrementally(client: Client) -> None:
    # é is \303\251: its two bytes arrive in separate reads.
    msgs = client.run(
        mode="batch", opts={"exec": "pwd; printf '\\303'; sleep 0.2; printf '\\251\\n'"}
    )
    assert exit_code(msgs) == 0
    out = text(msgs, "stdout").splitlines()
    assert out[0].endswith("/work")
    assert out[1] == "é"


def test_batch_interrupt(client: Client) -> None:
    run_id = client.start(mode="batch", opts={"exec": "echo started; sleep 100"})
    client.wait_for(lambda m: m.get("run_id") == run_id and m["t"] == "stdout")
    time.sleep(0.2)  # SIGINT while sh forks sleep can leave sleep alive (then: SIGKILL, 137)
    client.send({"op": "interrupt"})
    msgs = client.collect(run_id, timeout=10)
    assert exit_code(msgs) == 130

    # A command that ignores SIGINT is killed 2 s later.
    run_id = client.start(
        mode="batch", opts={"build": "trap '' INT; echo started; sleep 100", "exec": "echo no"}
    )
    client.wait_for(lambda m: m.get("run_id") == run_id and m["t"] == "stdout")
    started = time.monotonic()
    client.send({"op": "interrupt"})
    msgs = client.collect(run_id, timeout=10)
    assert 1.5 < time.monotonic() - started < 6
    assert exit_code(msgs) == 137
    assert "no" not in text(msgs, "stdout")


def test_second_run_is_queued(client: Client) -> None:
    first = client.start("import time\ntime.sleep(0.5)\nprint('one')")
    second = client.start("print('two')")
    status = client.request("status")["data"]
    deadline = time.monotonic() + 2
    while status["busy"] is None:  # the worker had not picked the first run up yet
        assert status["queued"] == [first, second]
        assert time.monotonic() < deadline
        time.sleep(0.02)
        status = client.request("status")["data"]
    assert status["busy"] == first and status["queued"] == [second]
    order: list[tuple[str, str]] = []
    while len([o for o in order if o[1] == "finished"]) < 2:
        m = client.wait_for(lambda m: m.get("run_id") in (first, second))
        order.append((m["run_id"], m["t"]))
    assert order == [
        (first, "stdout"),
        (first, "finished"),
        (second, "stdout"),
        (second, "finished"),
    ]


def test_duplicate_run_id_is_refused(client: Client) -> None:
    run_id = client.start("import time\ntime.sleep(0.3)")
    reply = client.request("execute", run_id=run_id, mode="query", code="print('twice')")
    assert reply["t"] == "error" and "already" in reply["data"]["message"]
    msgs = client.collect(run_id)
    assert exit_code(msgs) == 0 and text(msgs, "stdout") == ""


def test_reconnect_mid_run_gets_buffered_output(runtime: str) -> None:
    first = Client(runtime)
    run_id = first.start("import time\nprint('a', flush=True)\ntime.sleep(0.8)\nprint('b')")
    first.wait_for(lambda m: m.get("run_id") == run_id and m["t"] == "stdout")
    first.close()  # the agent goes away mid-run
    time.sleep(1.2)  # the run ends meanwhile
    second = Client(runtime)
    msgs = second.collect(run_id)
    second.close()
    assert text(msgs, "stdout") == "b\n"
    assert exit_code(msgs) == 0


def test_acked_agent_gets_unacknowledged_messages_again(tmp_path: Path) -> None:
    # Its own runtime: acknowledging turns retention on for the runtime's whole life.
    with launch_runtime(tmp_path) as sock:
        check_acked_replay(sock)


def check_acked_replay(runtime: str) -> None:
    first = Client(runtime)
    first.send({"op": "ack", "seq": 0})
    run_id = first.start("import time\nprint('a', flush=True)\ntime.sleep(0.5)\nprint('b')")
    a = first.wait_for(lambda m: m.get("run_id") == run_id and m["t"] == "stdout")
    first.close()  # read "a" but never acknowledged it
    time.sleep(0.8)
    second = Client(runtime)
    msgs = second.collect(run_id)
    assert msgs[0] == a  # sent again, same seq: the agent drops repeats by seq
    assert text(msgs, "stdout") == "a\nb\n"
    second.send({"op": "ack", "seq": msgs[-1]["seq"]})
    second.close()
    third = Client(runtime)
    assert third.request("ping")["t"] == "pong"  # nothing replayed before the reply
    assert not [m for m in third.inbox if m.get("run_id") == run_id]
    third.close()


def test_output_past_the_buffer_limit_is_dropped_with_a_note(tmp_path: Path) -> None:
    with launch_runtime(tmp_path, args=("--buffer-limit", "200000")) as sock:
        first = Client(sock)
        run_id = first.start(mode="batch", opts={"exec": "seq 1 200000"})  # 1.3 MB
        first.close()  # nobody reads
        time.sleep(1.5)
        second = Client(sock)
        msgs = second.collect(run_id)
        status = second.request("status")["data"]
        second.close()
    assert exit_code(msgs) == 0
    assert "bytes of output were dropped" in text(msgs, "stderr")
    out = text(msgs, "stdout")
    assert out.endswith("199999\n200000\n")  # the newest output is kept
    # a drop goes down to 3/4 of the limit in whole messages of up to READ_SIZE (a loaded
    # box reads bigger chunks), and the last messages may follow a drop at once
    assert 200_000 * 3 // 4 - READ_SIZE < len(out) <= 200_000
    assert status["dropped_bytes"] > 1_000_000


def test_new_connection_replaces_the_old_one(runtime: str) -> None:
    old = Client(runtime)
    assert old.request("ping")["t"] == "pong"
    new = Client(runtime)
    assert new.request("ping")["t"] == "pong"
    with pytest.raises((EOFError, ConnectionError)):
        old.recv(timeout=5)
    old.close()
    new.close()


def test_malformed_frames_are_answered_and_serving_goes_on(client: Client) -> None:
    garbage = b"\xc1\xc1\xc1"  # 0xc1 is never valid msgpack
    client.sock.sendall(struct.pack(">I", len(garbage)) + garbage)
    reply = client.recv()
    assert reply["t"] == "error" and reply["req"] is None
    not_a_map = pack([1, 2, 3])
    client.sock.sendall(struct.pack(">I", len(not_a_map)) + not_a_map)
    assert client.recv()["t"] == "error"
    reply = client.request("frobnicate")
    assert reply["t"] == "error" and "frobnicate" in reply["data"]["message"]
    reply = client.request("execute", mode="query", code="1")  # no run_id
    assert reply["t"] == "error"
    assert client.request("ping")["t"] == "pong"
    assert text(client.run("print('ok')"), "stdout") == "ok\n"


def test_large_output_is_coalesced(client: Client) -> None:
    msgs = client.run("for i in range(20000):\n    print(i)")
    assert exit_code(msgs) == 0
    out = text(msgs, "stdout")
    assert out == "".join(f"{i}\n" for i in range(20000))
    frames = [m for m in msgs if m["t"] == "stdout"]
    assert len(frames) < 200  # not one frame per line
    assert all(len(m["data"]) <= 64 * 1024 for m in frames)


def test_kernel_death_is_reported_and_the_kernel_restarted(client: Client) -> None:
    assert exit_code(client.run("doomed = 1")) == 0
    msgs = client.run("import os\nos._exit(3)")
    assert exit_code(msgs) == 1
    assert "died" in text(msgs, "stderr")
    msgs = client.run("print('doomed' in globals())")
    assert exit_code(msgs) == 0 and text(msgs, "stdout") == "False\n"
    assert client.request("status")["data"]["ready"] is True


@pytest.mark.skipif(bool(EXTERNAL), reason="the kernel's pid is in another pid namespace")
def test_idle_kernel_death_is_noticed(client: Client) -> None:
    assert exit_code(client.run("doomed = 2")) == 0
    old_pid = client.request("status")["data"]["kernel_pid"]
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:  # the watchdog notices within a few seconds and starts a new kernel
        status = client.request("status")["data"]
        if status["ready"] and status["kernel_pid"] != old_pid:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    msgs = client.run("print('doomed' in globals())")
    assert exit_code(msgs) == 0, msgs
    assert text(msgs, "stdout") == "False\n", msgs


def test_entrypoint_sources_the_bootstrap_script(tmp_path: Path) -> None:
    with launch_runtime(tmp_path, bootstrap="export KERNLET_TEST_GREETING=hi\n") as sock:
        client = Client(sock)
        msgs = client.run("import os\nprint(os.environ['KERNLET_TEST_GREETING'], os.getcwd())")
        assert exit_code(msgs) == 0
        greeting, cwd = text(msgs, "stdout").split()
        assert greeting == "hi" and cwd == str(tmp_path / "work")
        msgs = client.run(mode="batch", opts={"exec": 'echo "$KERNLET_TEST_GREETING"'})
        assert text(msgs, "stdout") == "hi\n"
        client.close()


# -- the ipykernel's start window: $KERNLET_START_TIMEOUT (the agent's create-timeout) ---------


def test_start_timeout_comes_from_the_environment() -> None:
    assert start_timeout_from_env({START_TIMEOUT_ENV: "300.0"}) == (300.0, CREATE_TIMEOUT_KEY)
    assert start_timeout_from_env({START_TIMEOUT_ENV: " 0.5 "}) == (0.5, CREATE_TIMEOUT_KEY)
    seconds, source = start_timeout_from_env({})
    assert seconds == DEFAULT_START_TIMEOUT == 60
    assert START_TIMEOUT_ENV in source and "default" in source
    for bad in ("abc", "0", "-5", "nan", "inf", "1e999"):
        with pytest.raises(ValueError, match=START_TIMEOUT_ENV):
            start_timeout_from_env({START_TIMEOUT_ENV: bad})


def test_the_runtime_started_by_the_entrypoint_uses_the_agents_window(tmp_path: Path) -> None:
    env = {START_TIMEOUT_ENV: "123.5"}
    with launch_runtime(tmp_path, bootstrap="", environ=env) as sock:
        client = Client(sock)
        assert client.request("status")["data"]["start_timeout"] == 123.5
        client.close()


def test_a_bad_start_timeout_is_a_usage_error(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC), **{START_TIMEOUT_ENV: "soon"})
    proc = subprocess.run(
        [PYTHON, "-m", "kernlet.kernel", "--socket", str(tmp_path / "s.sock")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert f"{START_TIMEOUT_ENV}: not a positive number of seconds: 'soon'" in proc.stderr
    assert not (tmp_path / "s.sock").exists()


class _SilentKernel:
    """A kernel that is alive and never answers kernel_info."""

    session = None

    def kernel_info(self) -> str:
        return uuid.uuid4().hex

    async def is_alive(self) -> bool:
        return True


async def test_the_start_window_is_the_one_given_and_its_error_names_the_key(
    tmp_path: Path,
) -> None:
    engine = QueryEngine(str(tmp_path), start_timeout=0.2, timeout_key=CREATE_TIMEOUT_KEY)
    engine.km = engine.kc = _SilentKernel()
    try:
        with pytest.raises(RuntimeError) as err:
            await engine._wait_ready(engine.start_timeout)
    finally:
        await engine.shutdown()
    # the window and its key, then what the probe saw: here nothing came back
    assert str(err.value).startswith(
        f"the kernel did not answer within 0.2 s ({CREATE_TIMEOUT_KEY}; after "
    )
    assert "1 kernel_info sent, 0 answered; 0 iopub messages" in str(err.value)


# -- completion the kernel does not give: an error, never an empty success -----------------


class _MuteKernel:
    """A ready kernel that never answers complete_request."""

    session = None

    def complete(self, text: str, pos: int) -> str:
        return uuid.uuid4().hex


class _Conn:
    def __init__(self) -> None:
        self.replies: list[Msg] = []

    def reply(self, msg: Msg) -> None:
        self.replies.append(msg)


async def test_a_completion_the_kernel_does_not_answer_in_time_is_an_error(
    tmp_path: Path,
) -> None:
    # A kernel's first completion is cold (jedi): the window must leave it room, and still
    # answer before the agent's own 10 s.
    assert 5.0 < COMPLETE_TIMEOUT < 10.0
    runtime = Runtime(str(tmp_path))
    engine = runtime.query
    engine.kc = _MuteKernel()
    engine.ready = True
    engine.complete_timeout = 0.2
    conn = _Conn()
    try:
        with pytest.raises(CompletionFailed, match=r"did not answer complete_request within 0\.2 s"):
            await engine.complete("import os; os.pa", 16)
        # What the agent gets: an error reply to its request, not an empty completion.
        runtime._op_complete(conn, {"op": "complete", "req": 7, "text": "import os; os.pa"})
        while runtime._tasks:
            await asyncio.gather(*runtime._tasks)
    finally:
        await engine.shutdown()
    assert conn.replies == [
        {
            "t": "error",
            "req": 7,
            "data": {"message": "the kernel did not answer complete_request within 0.2 s"},
        }
    ]
    assert not engine._replies  # the late answer, if it comes, is dropped


async def test_a_completion_while_the_kernel_is_not_ready_is_an_error(tmp_path: Path) -> None:
    engine = QueryEngine(str(tmp_path))
    engine.error = "the ipykernel did not restart: RuntimeError('boom')"
    try:
        with pytest.raises(CompletionFailed, match="not ready: the ipykernel did not restart"):
            await engine.complete("import os; os.pa", 16)
    finally:
        await engine.shutdown()


# -- the runtime's own memory ---------------------------------------------------------------

_LOADED_AFTER_START = """
import asyncio, sys
from kernlet.kernel.query import QueryEngine

async def main() -> None:
    engine = QueryEngine(sys.argv[1])
    await engine.start()
    try:
        assert engine.ready, engine.error
        print(sorted({m.split(".")[0] for m in sys.modules} & {"ipykernel", "IPython", "debugpy"}))
    finally:
        await engine.shutdown()

asyncio.run(main())
"""


def test_the_runtime_does_not_load_the_kernels_stack(tmp_path: Path) -> None:
    # For a kernel named "python3", jupyter_client imports ipykernel.kernelspec; in the
    # image's ipykernel 6 that brings IPython and debugpy: 32 of the runtime's 68 MiB.
    proc = subprocess.run(
        [PYTHON, "-c", _LOADED_AFTER_START, str(tmp_path)],
        env=dict(os.environ, PYTHONPATH=str(SRC)), capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
