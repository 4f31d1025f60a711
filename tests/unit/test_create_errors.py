"""A create's windows and what its errors say: the agent's wait for the runtime names
``agent.create-timeout`` and its value, has no shorter window inside it, and a failed create's
error carries the container's last output. The runtime is faked by a small unix-socket server
that answers status requests the way the real one does; Docker by a stub ``logs()``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from kernlet.actors import create_errors
from kernlet.actors.create_errors import OUTPUT_BYTES, connect_runtime, last_output
from kernlet.actors.steps import container_spec, kernel_dirs
from kernlet.config import AgentConfig
from kernlet.drivers.runtime import RuntimeChannel
from kernlet.errors import ContainerNotFound, RuntimeUnavailable
from kernlet.events import KernelState, State
from kernlet.events.codec import FrameReader, frame
from kernlet.layout import CREATE_TIMEOUT_KEY, START_TIMEOUT_ENV


class StubDocker:
    """Only ``logs``: returns the last ``tail`` lines of what the container 'printed'."""

    def __init__(self, printed: str = "", error: Exception | None = None) -> None:
        self.printed = printed
        self.error = error
        self.calls: list[tuple[str, int]] = []

    async def logs(self, container_id: str, tail: int = 1000) -> str:
        self.calls.append((container_id, tail))
        if self.error is not None:
            raise self.error
        lines = self.printed.splitlines(keepends=True)
        return "".join(lines[-tail:])


def channel(path: Path) -> RuntimeChannel:
    return RuntimeChannel(path, on_run=lambda _msg: None, on_lost=lambda: None)


Answer = Callable[[dict[str, Any]], Any]


class FakeRuntime:
    """A unix-socket server answering ``status`` with ``answer(msg)`` (awaited if a coroutine)."""

    def __init__(self, path: Path, answer: Answer) -> None:
        self.path = path
        self.answer = answer
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None
        #: the connections' handlers, ended on exit (Python 3.11's ``wait_closed`` does not
        #: wait for them, and one left pending is closed by the GC after the test's loop)
        self.handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FakeRuntime:
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.connections += 1
        frames = FrameReader()
        try:
            while data := await reader.read(65536):
                for msg in frames.feed(data):
                    data_ = self.answer(msg)
                    if asyncio.iscoroutine(data_):
                        data_ = await data_
                    writer.write(frame({"t": "status", "req": msg.get("req"), "data": data_}))
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def sock(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "runtime.sock"


# -- last_output -----------------------------------------------------------------------------


async def test_last_output_is_the_last_lines() -> None:
    docker = StubDocker("".join(f"line {i}\n" for i in range(100)))
    out = await last_output(docker, "c0ffee", lines=20)
    assert docker.calls == [("c0ffee", 20)]
    assert out.splitlines() == [f"line {i}" for i in range(80, 100)]


async def test_last_output_is_capped_at_the_end_and_cut_at_a_line() -> None:
    docker = StubDocker("".join(f"{i:04d} " + "x" * 300 + "\n" for i in range(20)))
    out = await last_output(docker, "c0ffee")
    assert len(out.encode()) <= OUTPUT_BYTES + len("[...]\n")
    lines = out.splitlines()
    assert lines[0] == "[...]"
    assert lines[-1].startswith("0019 ")
    assert all(len(line) == 305 for line in lines[1:])  # no partial line kept


async def test_last_output_never_raises() -> None:
    gone = StubDocker(error=ContainerNotFound("logs of c0ffee: No such container"))
    assert "could not be read" in await last_output(gone, "c0ffee")
    assert "No such container" in await last_output(gone, "c0ffee")
    assert await last_output(StubDocker(""), "c0ffee") == "(the container printed nothing)"
    assert await last_output(StubDocker("x"), "") == "(no container was created)"


# -- the agent's wait for the runtime --------------------------------------------------------


async def test_no_runtime_names_the_key_its_value_and_the_output(sock: Path) -> None:
    docker = StubDocker("kernlet: the bootstrap script failed with status 3\n")
    with pytest.raises(RuntimeUnavailable) as err:
        await connect_runtime(channel(sock), docker, "c0ffee", 0.3)
    msg = err.value.message
    assert f"not ready after 0.3 s ({CREATE_TIMEOUT_KEY})" in msg
    assert "its socket does not exist" in msg
    assert msg.endswith("the bootstrap script failed with status 3")


async def test_a_runtime_whose_ipykernel_is_not_ready_says_so(sock: Path) -> None:
    async with FakeRuntime(sock, lambda _msg: {"ready": False, "error": None}):
        with pytest.raises(RuntimeUnavailable) as err:
            await connect_runtime(channel(sock), StubDocker("booting\n"), "c0ffee", 0.5)
    msg = err.value.message
    assert f"not ready after 0.5 s ({CREATE_TIMEOUT_KEY})" in msg
    assert "its ipykernel was not ready yet" in msg
    assert msg.endswith("booting")


async def test_the_error_says_what_the_runtimes_readiness_probe_saw(sock: Path) -> None:
    starting = {"seconds": 61.5, "sent": 60, "answered": 0, "iopub": 0, "iopub_ours": 0,
                "reconnects": 2}
    status = {"ready": False, "error": None, "starting": starting}
    async with FakeRuntime(sock, lambda _msg: status):
        with pytest.raises(RuntimeUnavailable) as err:
            await connect_runtime(channel(sock), StubDocker("booting\n"), "c0ffee", 0.5)
    assert ("its ipykernel was not ready yet (after 61.5 s: 60 kernel_info sent, 0 answered; "
            "0 iopub messages, 0 for kernel_info; 2 reconnects)") in err.value.message


async def test_the_runtimes_own_error_comes_with_the_output(sock: Path) -> None:
    failed = ("the ipykernel did not start: RuntimeError('the kernel did not answer within "
              "300 s (agent.create-timeout)')")
    docker = StubDocker("Traceback (most recent call last):\nRuntimeError: boom\n")
    async with FakeRuntime(sock, lambda _msg: {"ready": False, "error": failed}):
        with pytest.raises(RuntimeUnavailable) as err:
            await connect_runtime(channel(sock), docker, "c0ffee", 30)
    msg = err.value.message
    assert failed in msg
    assert msg.endswith("the container's last output:\n"
                        "Traceback (most recent call last):\nRuntimeError: boom")


async def test_a_ready_runtime_reads_no_logs(sock: Path) -> None:
    docker = StubDocker("never read\n")
    async with FakeRuntime(sock, lambda _msg: {"ready": True, "version": "x"}):
        status = await connect_runtime(channel(sock), docker, "c0ffee", 30)
    assert status["version"] == "x"
    assert docker.calls == []


async def test_a_slow_status_answer_is_waited_for_within_the_timeout(sock: Path) -> None:
    """No window inside create-timeout: a runtime that takes longer to answer a status
    request than the old fixed 2 s per request still comes up, on its first connection."""

    async def slow(_msg: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(2.5)
        return {"ready": True}

    async with FakeRuntime(sock, slow) as fake:
        status = await channel(sock).connect(30, key=CREATE_TIMEOUT_KEY)
    assert status["ready"] is True
    assert fake.connections == 1


async def test_without_a_key_the_message_names_none(sock: Path) -> None:
    with pytest.raises(RuntimeUnavailable) as err:
        await channel(sock).connect(0.2)
    assert "not ready after 0.2 s: its socket does not exist" in err.value.message


# -- the window reaches the container --------------------------------------------------------


@pytest.mark.parametrize("seconds", [300.0, 0.5])
def test_the_container_gets_create_timeout_as_the_start_timeout(
    tmp_path: Path, seconds: float
) -> None:
    cfg = AgentConfig.model_validate(
        {"agent": {"var-dir": str(tmp_path), "create-timeout": seconds}}
    )
    state = KernelState(
        kernel_id="k1", state=State.CREATING, seq=1, session_id="s", image="img",
        config={"environ": {START_TIMEOUT_ENV: "1"}},  # a user's value does not win
    )
    spec = container_spec(cfg, state, kernel_dirs(cfg, "k1"), {})
    assert float(spec.env[START_TIMEOUT_ENV]) == seconds


def test_the_output_is_added_once() -> None:
    once = create_errors.with_output("it failed", "boom")
    assert once == "it failed\nthe container's last output:\nboom"
    assert create_errors.with_output(once, "boom again") == once


def test_module_surface() -> None:
    assert create_errors.__all__ == sorted(create_errors.__all__)
