"""EventSubscriber hands each event over once (duplicates from re-publishing dropped by id),
and ``pending`` is that of the event handed over, not of the last one received."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kernlet.client_events import EventSubscriber
from kernlet.events import pack


@dataclass
class Meta:
    num_pending: int


@dataclass
class Msg:
    data: bytes
    metadata: Meta


class FakeSub:
    async def unsubscribe(self) -> None:
        pass


class FakeJetStream:
    def __init__(self, nc: FakeNats) -> None:
        self.nc = nc

    async def subscribe(self, subject: str, cb: Callable[[Any], Awaitable[None]],
                        **kw: Any) -> FakeSub:
        self.nc.subject, self.nc.cb, self.nc.options = subject, cb, kw
        return FakeSub()


class FakeNats:
    """Stands in for nats-py's client: the test delivers messages to the callback."""

    def __init__(self) -> None:
        self.subject = ""
        self.cb: Callable[[Any], Awaitable[None]] | None = None
        self.options: dict[str, Any] = {}

    async def subscribe(self, subject: str, cb: Callable[[Any], Awaitable[None]]) -> FakeSub:
        self.subject, self.cb = subject, cb
        return FakeSub()

    def jetstream(self) -> FakeJetStream:
        return FakeJetStream(self)


def event(n: int) -> bytes:
    return pack({"id": f"e{n}", "kernel_id": "k1", "seq": n, "type": "kernel_preparing",
                 "payload": {}})


async def test_duplicates_are_dropped_by_event_id_and_pending_follows_the_event() -> None:
    nc = FakeNats()
    sub = await EventSubscriber(nc, "kernlet", "a1", jetstream=True,  # type: ignore[arg-type]
                                since=1000.0, kernel_id="k1").start()
    assert nc.subject == "kernlet.events.a1.k1.*"
    assert nc.options["ordered_consumer"] is True
    assert nc.cb is not None
    for n, pending in ((1, 2), (1, 2), (2, 1), (3, 0), (2, 0)):  # e1 and e2 come twice
        await nc.cb(Msg(event(n), Meta(pending)))
    got = [(await sub.next(1)) for _ in range(3)]
    assert [e["id"] for e in got] == ["e1", "e2", "e3"]
    assert sub.duplicates == 2
    assert sub.pending == 0


async def test_plain_nats_subscribes_to_every_event_of_the_agent() -> None:
    nc = FakeNats()
    sub = await EventSubscriber(nc, "p", "a1").start()  # type: ignore[arg-type]
    assert nc.subject == "p.events.a1.>"
    assert nc.cb is not None
    await nc.cb(Msg(event(1), Meta(5)))
    assert (await sub.next(1))["id"] == "e1"
    assert sub.pending is None  # no stream: no pending count
