"""The runtime's readiness probe: when a starting ipykernel counts as ready, and how a start
that hears nothing recovers (kernlet.kernel.probe, QueryEngine._wait_ready, jupyter.kick).

The engine is driven with fake kernel clients that deliver their messages straight to its
handlers, except the last test, which uses real zmq sockets.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from kernlet.kernel import jupyter, query
from kernlet.kernel.probe import ReadinessProbe
from kernlet.kernel.query import QueryEngine


def _msg(kind: str, parent: str, **content: Any) -> dict[str, Any]:
    return {"header": {"msg_type": kind}, "msg_type": kind,
            "parent_header": {"msg_id": parent}, "content": content}


class FakeClient:
    """A kernel client whose kernel answers each kernel_info ``delay`` seconds later: the
    reply on shell, and (unless ``iopub`` is off) busy and idle on iopub."""

    def __init__(self, engine: QueryEngine, delay: float | None, iopub: bool = True) -> None:
        self.engine = engine
        self.delay = delay  # None: never answers
        self.iopub = iopub
        self.sent: list[str] = []
        self.closed = False
        # channels the engine's (faked) readers are given; the kernel calls the handlers
        self.shell_channel = self.iopub_channel = self.stdin_channel = self.session = None

    def kernel_info(self) -> str:
        msg_id = uuid.uuid4().hex
        self.sent.append(msg_id)
        if self.delay is not None:
            asyncio.get_running_loop().call_later(self.delay, self._answer, msg_id)
        return msg_id

    def _answer(self, msg_id: str) -> None:
        if self.closed:
            return  # the reply went to a socket that is gone
        if self.iopub:
            self.engine._on_iopub(_msg("status", msg_id, execution_state="busy"))
        else:  # the kernel's iopub carries only others' messages
            self.engine._on_iopub(_msg("status", "someone-else", execution_state="busy"))
        self.engine._on_shell(_msg("kernel_info_reply", msg_id, status="ok"))
        if self.iopub:
            self.engine._on_iopub(_msg("status", msg_id, execution_state="idle"))


class AliveKernel:
    async def is_alive(self) -> bool:
        return True


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[QueryEngine]:
    eng = QueryEngine(str(tmp_path), start_timeout=10)
    eng.km = AliveKernel()
    yield eng


async def _wait(engine: QueryEngine, limit: float) -> float:
    t0 = time.monotonic()
    await engine._wait_ready(limit)
    return time.monotonic() - t0


async def test_a_kernel_that_answers_every_request_late_is_ready(engine: QueryEngine) -> None:
    # Each reply arrives 1.5 s after its request, after the next request was sent: a probe
    # that waited for the latest request's answer only would never end.
    engine.kc = client = FakeClient(engine, delay=1.5)
    took = await _wait(engine, 8.0)
    assert took < 4.0
    progress = engine.probe.progress
    assert progress.answered >= 1 and progress.iopub_ours >= 1
    assert len(client.sent) >= 2  # it was answered after its second had passed


async def test_replies_without_our_iopub_status_are_not_ready(engine: QueryEngine) -> None:
    # The reply alone does not prove that iopub is subscribed: the first run's output would
    # be lost on a SUB socket that has not joined yet.
    engine.kc = FakeClient(engine, delay=0.01, iopub=False)
    with pytest.raises(RuntimeError, match=r"did not answer within 1\.5 s") as err:
        await _wait(engine, 1.5)
    progress = engine.probe.progress
    assert progress.answered >= 1 and progress.iopub >= 1 and progress.iopub_ours == 0
    assert "0 for kernel_info" in str(err.value)


async def test_a_kernel_that_stays_silent_gets_new_channels_and_is_heard_on_them(
    engine: QueryEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first connection hears nothing (a wake-up lost in the kernel's socket); the second
    # one is answered at once.
    clients: list[FakeClient] = []

    def connect(km: object) -> FakeClient:
        clients.append(FakeClient(engine, delay=None if not clients else 0.01))
        return clients[-1]

    async def read_channel(channel: object, session: object, handle: object) -> None:
        await asyncio.Event().wait()  # the fake delivers to the handlers itself

    def close_channels(kc: FakeClient) -> None:
        kc.closed = True

    monkeypatch.setattr(jupyter, "connect", connect)
    monkeypatch.setattr(jupyter, "read_channel", read_channel)
    monkeypatch.setattr(jupyter, "close_channels", close_channels)
    monkeypatch.setattr(query, "RECONNECT_AFTER", 1.5)
    engine._open_channels()
    try:
        await _wait(engine, 8.0)
    finally:
        for task in engine._readers:
            task.cancel()
    assert len(clients) == 2 and clients[0].closed and not clients[1].closed
    assert engine.kc is clients[1]
    assert engine.probe.progress.reconnects == 1


async def test_a_kernel_heard_from_is_not_reconnected(
    engine: QueryEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It answers, but too slowly for the window: it is slow, not deaf.
    engine.kc = FakeClient(engine, delay=0.01, iopub=False)
    monkeypatch.setattr(query, "RECONNECT_AFTER", 0.5)
    with pytest.raises(RuntimeError):
        await _wait(engine, 2.5)
    assert engine.probe.progress.reconnects == 0


def test_the_probe_counts_only_its_own_requests() -> None:
    probe = ReadinessProbe()
    probe.sent("a")
    assert not probe.on_shell("stray")
    probe.on_iopub("stray", "status")
    assert not probe.ready
    assert probe.on_shell("a")
    assert not probe.ready  # no iopub status of ours yet
    probe.on_iopub("a", "stream")
    assert not probe.ready  # not a status
    probe.on_iopub("a", "status")
    assert probe.ready
    assert probe.progress.as_dict() | {"seconds": 0} == {
        "seconds": 0, "sent": 1, "answered": 1, "iopub": 3, "iopub_ours": 1, "reconnects": 0,
    }


class _Channel:
    def __init__(self, socket: zmq.asyncio.Socket) -> None:
        self.socket = socket


class _Client:
    def __init__(self, socket: zmq.asyncio.Socket) -> None:
        self.shell_channel = _Channel(socket)


async def test_kick_delivers_a_message_whose_wake_up_was_consumed(tmp_path: Path) -> None:
    # zmq's FD is edge-triggered: reading ZMQ_EVENTS on the raw socket consumes the wake-up,
    # and the asyncio receiver waits on with a message in the socket; kick() finds it.
    ctx = zmq.asyncio.Context()
    sync_ctx = zmq.Context()
    addr = f"ipc://{tmp_path}/k"
    pull = ctx.socket(zmq.PULL)
    pull.bind(addr)
    push = sync_ctx.socket(zmq.PUSH)
    push.connect(addr)
    raw = zmq.Socket.shadow(pull.underlying)
    try:
        fut = asyncio.ensure_future(pull.recv_multipart())
        await asyncio.sleep(0.1)  # the receiver is registered and idle
        push.send(b"hello")
        _settle(lambda: raw.get(zmq.EVENTS) & zmq.POLLIN)  # consumes the wake-up
        done, _ = await asyncio.wait({fut}, timeout=0.5)
        assert not done  # stuck, as a missed wake-up leaves it
        jupyter.kick(_Client(pull))
        assert await asyncio.wait_for(fut, 2.0) == [b"hello"]
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        sync_ctx.term()
        ctx.term()


def _settle(check: Callable[[], object], limit: float = 2.0) -> None:
    """Block (without yielding to the loop) until ``check()`` is true."""
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "the message never reached the socket"
        time.sleep(0.01)
