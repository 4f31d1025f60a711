"""NATS security as docs/protocol.md describes it, on a private TLS nats-server on loopback.

The test makes a throwaway CA (and a rogue one), writes the server's config with the user
accounts of two agents (A, B), a manager and an admin (for inspecting JetStream only), each
with the permissions of docs/protocol.md, and checks what each may and may not do; then a
real agent serves a ping through it, refuses a server certificate from another CA, and
connects with a client certificate to a server that requires one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client

from integration.conftest import AgentProcess, wait_for
from integration.servers import ConfiguredNats
from kernlet.client import KernletClient
from kernlet.drivers.nats import BusSettings, NatsDriver, settle
from kernlet.errors import AgentUnavailable
from kernlet.halfstack.pki import CA, Pair
from kernlet.halfstack.secure_nats import agent_permissions, authorization, manager_permissions

pytestmark = pytest.mark.timeout(180)

P = "kernlet"
STREAM = "KERNLET_EVENTS"
A = f"sec-a-{uuid.uuid4().hex[:6]}"
B = f"sec-b-{uuid.uuid4().hex[:6]}"
PASSWORD = {A: "pw-a", B: "pw-b", "manager": "pw-m", "admin": "pw-admin"}


MANAGER = manager_permissions(P)


def users() -> str:
    """The accounts: agents A and B and a manager with the permissions kernlet ships
    (kernlet.halfstack.secure_nats, as docs/protocol.md says), an admin with all."""
    return authorization({
        A: (PASSWORD[A], agent_permissions(A, P, STREAM)),
        B: (PASSWORD[B], agent_permissions(B, P, STREAM)),
        "manager": (PASSWORD["manager"], MANAGER),
        "admin": (PASSWORD["admin"], None),
    })


@dataclass(frozen=True)
class Pki:
    ca: CA
    rogue: CA
    server: Pair
    client: Pair


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca, rogue = CA(root, "good"), CA(root, "rogue")
    return Pki(ca, rogue, ca.issue("nats-server", server=True), ca.issue("client", server=False))


def tls_block(pki: Pki, verify: bool) -> str:
    return "tls " + json.dumps({"cert_file": str(pki.server.cert), "key_file": str(pki.server.key),
                                "ca_file": str(pki.ca.path), "verify": verify, "timeout": 5})


def start_server(root: Path, body: str) -> ConfiguredNats:
    server = ConfiguredNats(root, body, scheme="tls")
    try:
        server.start()
    except AssertionError:
        log = server.log.read_text() if server.log.exists() else "(no log)"
        raise AssertionError(f"private nats-server did not start: {log[-2000:]}") from None
    return server


@pytest.fixture(scope="module")
def secure(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredNats]:
    """TLS (server certificate only) and the user accounts."""
    server = start_server(tmp_path_factory.mktemp("nats-tls"),
                          f"{tls_block(pki, verify=False)}\n{users()}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredNats]:
    """The same, and every client must show a certificate of the CA (``verify: true``)."""
    server = start_server(tmp_path_factory.mktemp("nats-mtls"),
                          f"{tls_block(pki, verify=True)}\n{users()}")
    yield server
    server.stop()


def tls(pki: Pki, client: Pair | None = None, ca: CA | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str((ca or pki.ca).path))
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


class Conn:
    """A raw nats-py connection as one user; collects the errors the server reports."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Client | None = None
        self._new_error = asyncio.Event()

    async def open(self, url: str, user: str, ctx: ssl.SSLContext) -> Conn:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc).lower())
            self._new_error.set()

        prefix = f"_INBOX_{user}" if user in (A, B) else "_INBOX"
        self.nc = await nats.connect(url, user=user, password=PASSWORD[user], tls=ctx,
                                     error_cb=on_error, allow_reconnect=False,
                                     inbox_prefix=prefix, connect_timeout=5)
        return self

    async def violation(self, subject: str, timeout: float = 10.0) -> str:
        """Wait (bounded) for the server's permissions violation naming ``subject``."""
        async def seen() -> str:
            while True:
                for e in self.errors:
                    if "permissions violation" in e and f'"{subject.lower()}"' in e:
                        return e
                self._new_error.clear()
                await self._new_error.wait()

        return await asyncio.wait_for(seen(), timeout)

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


@pytest.fixture
async def conns(secure: ConfiguredNats, pki: Pki) -> AsyncIterator[Any]:
    opened: list[Conn] = []

    async def connect(user: str) -> Conn:
        c = await Conn().open(secure.url, user, tls(pki))
        opened.append(c)
        return c

    yield connect
    for c in opened:
        await c.close()


DENIED_TO_AGENT_A = [
    ("subscribe", f"{P}.agent.{B}.cmd.*"),      # B's commands
    ("subscribe", f"{P}.agent.{B}.cmd.ping"),
    ("subscribe", f"{P}.events.{B}.>"),         # B's events
    ("subscribe", "_INBOX.>"),                  # the managers' replies (B's included)
    ("subscribe", f"_INBOX_{B}.>"),             # B's own inboxes
    ("publish", f"{P}.events.{B}.k1.kernel_started"),  # forging B's events
    ("publish", f"{P}.heartbeat.{B}"),
    ("publish", f"{P}.agent.{B}.cmd.destroy_kernel"),  # commanding another agent
    ("publish", f"$JS.API.CONSUMER.CREATE.{STREAM}"),   # reading the stream (B's events)
    ("publish", f"$JS.API.STREAM.DELETE.{STREAM}"),
]


@pytest.mark.parametrize(("op", "subject"), DENIED_TO_AGENT_A)
async def test_agent_a_is_confined_to_its_subjects(conns: Any, op: str, subject: str) -> None:
    a = await conns(A)
    assert a.nc is not None
    if op == "subscribe":
        await a.nc.subscribe(subject)
    else:
        await a.nc.publish(subject, b"x")
    await settle(a.nc)
    err = await a.violation(subject)
    assert {"subscribe": "for subscription to", "publish": "for publish to"}[op] in err


async def test_a_forged_event_never_reaches_the_manager(conns: Any) -> None:
    """What A publishes on B's subject is dropped; A's own event, sent after it, arrives
    first (messages of one connection keep their order)."""
    a, m = await conns(A), await conns("manager")
    assert a.nc is not None and m.nc is not None
    got: asyncio.Queue[str] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        await got.put(msg.subject)

    await m.nc.subscribe(f"{P}.events.>", cb=on_msg)
    await settle(m.nc)
    await a.nc.publish(f"{P}.events.{B}.k1.kernel_started", b"forged")
    await a.nc.publish(f"{P}.events.{A}.k1.kernel_started", b"real")
    await settle(a.nc)
    assert await asyncio.wait_for(got.get(), 10) == f"{P}.events.{A}.k1.kernel_started"
    await a.violation(f"{P}.events.{B}.k1.kernel_started")


async def test_manager_can_command_and_listen(conns: Any) -> None:
    """The manager's side of docs/protocol.md: a request to A's command subject and A's
    reply to its inbox, A's events and heartbeats."""
    a, m = await conns(A), await conns("manager")
    assert a.nc is not None and m.nc is not None

    async def serve(msg: Any) -> None:
        await msg.respond(b"pong:" + msg.data)

    await a.nc.subscribe(f"{P}.agent.{A}.cmd.*", cb=serve)
    await settle(a.nc)
    reply = await m.nc.request(f"{P}.agent.{A}.cmd.ping", b"hi", timeout=10)
    assert reply.data == b"pong:hi"
    for pattern, subject in ((f"{P}.events.>", f"{P}.events.{A}.k1.kernel_started"),
                             (f"{P}.heartbeat.*", f"{P}.heartbeat.{A}")):
        sub = await m.nc.subscribe(pattern)
        await settle(m.nc)
        await a.nc.publish(subject, b"x")
        assert (await sub.next_msg(timeout=10)).subject == subject
        await sub.unsubscribe()
    assert not a.errors and not m.errors


DENIED_TO_MANAGER = [
    ("subscribe", f"{P}.agent.{A}.cmd.*"),          # snooping on commands
    ("publish", f"{P}.events.{A}.k1.kernel_started"),  # forging an agent's events
    ("publish", f"{P}.heartbeat.{A}"),
    ("publish", f"{P}.other"),
    ("publish", f"$JS.API.STREAM.DELETE.{STREAM}"),
]


@pytest.mark.parametrize(("op", "subject"), DENIED_TO_MANAGER)
async def test_manager_can_do_no_more(conns: Any, op: str, subject: str) -> None:
    m = await conns("manager")
    assert m.nc is not None
    if op == "subscribe":
        await m.nc.subscribe(subject)
    else:
        await m.nc.publish(subject, b"x")
    await settle(m.nc)
    await m.violation(subject)


# -- a real agent ---------------------------------------------------------------------------


def nats_section(url: str, agent: str, ca: Path, client: Pair | None = None) -> str:
    text = (f'[nats]\nurl = "{url}"\nuser = "{agent}"\npassword = "{PASSWORD[agent]}"\n'
            f'tls-ca = "{ca}"\n')
    if client is not None:
        text += f'tls-cert = "{client.cert}"\ntls-key = "{client.key}"\n'
    return text + "[heartbeat]\ninterval = 0.5\n"


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    agents: list[AgentProcess] = []
    yield agents
    for agent in agents:
        agent.cleanup()


async def test_agent_serves_a_ping_through_tls(
    halfstack: None, secure: ConfiguredNats, pki: Pki, tmp_path: Path,
    agents: list[AgentProcess],
) -> None:
    agent = AgentProcess(tmp_path, A, nats_section(secure.url, A, pki.ca.path))
    agents.append(agent)
    agent.start()
    async with KernletClient(secure.url, agent_id=A, timeout=30, user="manager",
                             password=PASSWORD["manager"], tls=tls(pki)) as c:
        await wait_for(lambda: "NATS connected" in agent.log.read_text())
        pong = await c.ping("over tls")
        assert pong["agent_id"] == A and pong["msg"] == "over tls"
        sub = await c.nc.subscribe(f"{P}.heartbeat.{A}")
        assert (await sub.next_msg(timeout=20)).subject == f"{P}.heartbeat.{A}"
    # the agent made the stream and its events are in it: JetStream works under its rights
    admin = await nats.connect(secure.url, user="admin", password=PASSWORD["admin"],
                               tls=tls(pki), allow_reconnect=False)
    try:
        js = admin.jetstream()

        async def stored() -> bool:
            info = await js.stream_info(STREAM, subjects_filter=f"{P}.events.{A}.>")
            return info.state.messages > 0
        await wait_for(stored)
    finally:
        await admin.close()
    log = agent.log.read_text().lower()
    assert "permissions violation" not in log and "jetstream unavailable" not in log


async def test_agent_refuses_a_server_certificate_of_another_ca(
    halfstack: None, secure: ConfiguredNats, pki: Pki, tmp_path: Path,
    agents: list[AgentProcess],
) -> None:
    """The agent trusts only the rogue CA: it starts (kernels are served locally and events
    wait in its log), says why it cannot connect, naming the URL, and keeps retrying."""
    agent = AgentProcess(tmp_path, B, nats_section(secure.url, B, pki.rogue.path))
    agents.append(agent)
    agent.start()
    line = await wait_for(lambda: next((ln for ln in agent.log.read_text().splitlines()
                                        if "certificate verification failed" in ln), None))
    assert " ERROR " in line and secure.url in line
    assert "unable to get local issuer certificate" in line
    async with KernletClient(secure.url, agent_id=B, timeout=10, user="manager",
                             password=PASSWORD["manager"], tls=tls(pki)) as c:
        with pytest.raises(AgentUnavailable, match="no agent"):
            await c.ping()
    assert agent.proc is not None and agent.proc.poll() is None


async def test_mtls_agent_with_client_cert_serves_and_a_client_without_fails(
    halfstack: None, mtls: ConfiguredNats, pki: Pki, tmp_path: Path,
    agents: list[AgentProcess],
) -> None:
    agent = AgentProcess(tmp_path, A, nats_section(mtls.url, A, pki.ca.path, pki.client))
    agents.append(agent)
    agent.start()
    async with KernletClient(mtls.url, agent_id=A, timeout=30, user="manager",
                             password=PASSWORD["manager"], tls=tls(pki, pki.client)) as c:
        await wait_for(lambda: "NATS connected" in agent.log.read_text())
        assert (await c.ping("mtls"))["msg"] == "mtls"
    with pytest.raises(AgentUnavailable, match="cannot reach NATS") as info:
        async with KernletClient(mtls.url, agent_id=A, user="manager",
                                 password=PASSWORD["manager"], tls=tls(pki)):
            pass
    assert mtls.url in str(info.value) and "TLS failed" in str(info.value)


async def test_token_auth_and_a_refused_token_is_logged_as_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """``nats.token``: the driver connects with the right one; with a wrong one it keeps
    retrying and logs, at ERROR and naming the URL, that the server refused it."""
    server = ConfiguredNats(tmp_path, 'authorization { token: "t0k-secret" }')
    server.start()
    try:
        good = NatsDriver(BusSettings(server.url, token="t0k-secret"))
        await good.connect()
        assert good.connected
        await good.close()
        bad = NatsDriver(BusSettings(server.url, token="wrong"))
        with caplog.at_level(logging.WARNING, logger="kernlet.drivers.nats"):
            task = asyncio.create_task(bad.connect())
            try:
                # the first attempt may end on the socket's reset before nats-py reads
                # the server's -ERR; the refusal is told by the attempt that reads it
                await wait_for(lambda: (bad.last_error or "").startswith("authorization"))
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert not bad.connected
        assert any(r.levelno == logging.ERROR and server.url in r.getMessage()
                   and "authorization violation" in r.getMessage() for r in caplog.records)
    finally:
        server.stop()


async def test_asking_for_tls_means_tls_or_no_connection(tmp_path: Path, pki: Pki) -> None:
    """A plain server (or an impostor) at a ``tls://`` URL: nats-py alone would connect in
    clear text and send the password; the driver and the client refuse before CONNECT."""
    server = ConfiguredNats(tmp_path, users(), scheme="tls")
    server.start()
    try:
        driver = NatsDriver(BusSettings(server.url, user=A, password=PASSWORD[A], tls=tls(pki)))
        task = asyncio.create_task(driver.connect())
        try:
            await wait_for(lambda: driver.last_error)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert not driver.connected
        assert "the server offered none: credentials not sent" in (driver.last_error or "")
        with pytest.raises(AgentUnavailable, match="offered none"):
            async with KernletClient(server.url, agent_id=A, user="manager",
                                     password=PASSWORD["manager"], tls=tls(pki)):
                pass
    finally:
        server.stop()
