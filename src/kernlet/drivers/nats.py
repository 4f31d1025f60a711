"""NATS driver over nats-py: connect, serve requests, publish events (JetStream when present).

nats-py errors are translated into :class:`kernlet.errors.BusError` in :func:`_translate`.
Runs on the agent's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from kernlet.errors import BusError

__all__ = ["BusSettings", "NatsDriver", "Request", "describe", "open_connection"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BusSettings:
    """How to reach NATS. ``tls`` comes from ``NatsSection.tls_context()``; ``inbox_prefix``
    lets permissions give an agent its own reply inboxes (``_INBOX_<agent id>.>``)."""

    url: str
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: Path | None = None
    tls: ssl.SSLContext | None = None
    inbox_prefix: str = "_INBOX"
    name: str = "kernlet"


class _TlsOnlyClient(Client):
    """nats-py upgrades to TLS only when the server's INFO asks for it, even for a
    ``tls://`` URL with a TLS context: a plain (or impostor) server would get the CONNECT,
    credentials included, in clear text. This client refuses to send it then."""

    def _connect_command(self) -> bytes:
        if not self._server_info.get("tls_required"):
            raise nats.errors.Error("nats: TLS was asked for but the server offered none: "
                                    "credentials not sent")
        return super()._connect_command()


async def open_connection(url: str, tls: ssl.SSLContext | None, **options: Any) -> Client:
    """``nats.connect``, except that asking for TLS (a context, or a ``tls://`` URL) means
    TLS or no connection (:class:`_TlsOnlyClient`)."""
    nc = _TlsOnlyClient() if tls is not None or url.startswith("tls://") else Client()
    await nc.connect(url, tls=tls, **options)
    return nc


async def settle(nc: Client, timeout: float = 5.0) -> None:
    """Return once the server has everything sent on ``nc`` so far.

    nats-py's ``flush`` writes its PING straight to the socket while earlier commands (a
    SUB, a PUB) may still wait in its pending buffer for the flusher task, so the PONG can
    come back before the server saw them (measured: a subscription missed the next message
    in 1 of 2-15 runs). The first flush makes the flusher write the buffer; the second's PING
    then follows it on the wire."""
    await nc.flush(timeout)  # type: ignore[arg-type]
    await nc.flush(timeout)  # type: ignore[arg-type]


#: how a server's closing of the socket shows, when it follows its refusal
_CLOSED_BY_SERVER = (ConnectionResetError, BrokenPipeError, nats.errors.UnexpectedEOF)
#: the reasons (as :func:`describe` words them) that a server's refusal gives
_REFUSALS = ("authorization violation", "TLS")
#: said of a reset on a TLS connection when nothing more telling was read
_TLS_RESET = ("the server closed the connection during or right after the TLS handshake "
              "(a server that requires a client certificate does this when none, or one it "
              "does not trust, is sent)")


def describe(exc: BaseException) -> str:
    """What went wrong, in words an operator can act on (TLS and auth failures say so)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc}"
    if isinstance(exc, nats.errors.AuthorizationError) \
            or "authorization violation" in str(exc).lower():
        return "authorization violation: the server refused these credentials"
    return f"{type(exc).__name__}: {exc}"


def reason(exc: BaseException, previous: str | None, tls: bool) -> str:
    """The reason a failed attempt gives, given the one before it.

    A server that refuses credentials or a TLS peer closes the socket after its -ERR or
    alert, and the client may read the reset before or after them (TLS 1.3 checks the
    client's certificate after the client's handshake is done): a reset after a refusal
    keeps the refusal as the reason, and a reset on TLS with nothing better says what it
    most likely means."""
    if isinstance(exc, _CLOSED_BY_SERVER):
        if previous is not None and previous.startswith(_REFUSALS):
            return previous
        if tls:
            return f"TLS failed: {_TLS_RESET}"
    return describe(exc)


@dataclass(frozen=True, slots=True)
class Request:
    """One incoming request: its subject, body and where the reply goes."""

    subject: str
    data: bytes
    reply: str


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
        raise BusError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except TimeoutError as exc:
        raise BusError(f"{what}: timed out") from exc


class NatsDriver:
    """A NATS connection that reconnects forever and reports its state."""

    def __init__(self, settings: BusSettings) -> None:
        self._settings = settings
        self._nc: Client | None = None
        #: the JetStream context of ``_nc`` (made once per connection, not once per publish)
        self._js: JetStreamContext | None = None
        self.jetstream = False
        self._on_reconnect: list[Callable[[], Awaitable[None]]] = []
        self._closing = False
        #: failed connection attempts since the last connection, and the last one's reason
        self.failures = 0
        self.last_error: str | None = None
        self._tls = settings.tls is not None or settings.url.startswith("tls://")

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._on_reconnect.append(callback)

    def _error(self, exc: Exception) -> None:
        """nats-py's error callback: it retries by itself (first connection included), so
        this is where a failure is told. A permissions violation is always an error; a
        failed connection attempt is logged the first time, when its reason changes and
        every 60th time after."""
        what = reason(exc, self.last_error, self._tls)
        if "permissions violation" in str(exc).lower():
            log.error("NATS %s: %s (see the permissions in docs/protocol.md)", self._settings.url,
                      exc)
            return
        if self.connected:
            log.debug("NATS error: %s", what)
            return
        self.failures += 1
        if what != self.last_error or self.failures % 60 == 1:
            level = logging.ERROR if isinstance(exc, ssl.SSLError) \
                or what.startswith("authorization") else logging.WARNING
            log.log(level, "NATS %s: cannot connect: %s (attempt %d; retrying)",
                    self._settings.url, what, self.failures)
        self.last_error = what

    async def connect(self, timeout: float = 5.0) -> None:
        s = self._settings

        async def reconnected() -> None:
            log.info("NATS reconnected")
            self.failures = 0
            for cb in self._on_reconnect:
                await cb()

        async def disconnected() -> None:
            if not self._closing:
                log.warning("NATS disconnected")

        async def error(exc: Exception) -> None:
            self._error(exc)

        with _translate(f"connect to {s.url}"):
            self._js = None
            self._nc = await open_connection(
                s.url,
                s.tls,
                name=s.name,
                user=s.user,
                password=s.password,
                token=s.token,
                user_credentials=str(s.creds) if s.creds else None,
                inbox_prefix=s.inbox_prefix,
                connect_timeout=timeout,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                reconnected_cb=reconnected,
                disconnected_cb=disconnected,
                error_cb=error,
                pending_size=64 * 1024 * 1024,
            )

    async def connect_forever(
        self, on_connect: Callable[[], Awaitable[None]], retry: float = 1.0
    ) -> None:
        """Connect, retrying until NATS answers, then run ``on_connect`` once. An agent
        starts without NATS and serves as soon as it is reachable. nats-py retries a server
        that refuses or fails TLS by itself (:meth:`_error` logs why); this loop retries what
        ``nats.connect`` raises."""
        attempt = 0
        while not self._closing:
            try:
                await self.connect()
                self.failures = 0
                break
            except BusError as exc:
                attempt += 1
                if attempt == 1 or attempt % 30 == 0:
                    log.warning("NATS not reachable yet (%s); retrying every %.0f s", exc, retry)
                await asyncio.sleep(retry)
        if not self._closing:
            log.info("NATS connected to %s", self._settings.url)
            await on_connect()

    async def close(self) -> None:
        self._closing = True
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None
            self._js = None

    @property
    def _c(self) -> Client:
        if self._nc is None:
            raise BusError("not connected to NATS")
        return self._nc

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            self._js = self._c.jetstream()
        return self._js

    async def ensure_stream(self, name: str, subjects: list[str]) -> bool:
        """Create or update the JetStream stream; False when the server has no JetStream."""
        js = self._jetstream()
        config = StreamConfig(
            name=name, subjects=subjects, duplicate_window=600.0, max_age=7 * 24 * 3600.0
        )
        try:
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await js.update_stream(config)
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
            self.jetstream = False
            return False
        except (nats.errors.TimeoutError, nats.js.errors.APIError) as exc:
            log.warning("JetStream unavailable (%s); publishing plain NATS events", exc)
            self.jetstream = False
            return False
        self.jetstream = True
        return True

    async def serve(
        self, subject: str, handler: Callable[[Request], Coroutine[Any, Any, None]]
    ) -> None:
        """Handle each request on its own task, so a slow one never holds up the next."""
        tasks: set[asyncio.Task[None]] = set()

        async def on_msg(msg: Msg) -> None:
            task = asyncio.create_task(handler(Request(msg.subject, msg.data, msg.reply)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        with _translate(f"subscribe {subject}"):
            await self._c.subscribe(subject, cb=on_msg, pending_msgs_limit=65536)

    async def publish(self, subject: str, data: bytes) -> None:
        with _translate(f"publish {subject}"):
            await self._c.publish(subject, data)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the server has everything published so far (a PING/PONG round trip,
        tried again every ``timeout`` seconds: a lagging or reconnecting NATS is waited for;
        a closed connection is an error)."""
        while True:
            try:
                with _translate("flush"):
                    await settle(self._c, timeout)
                return
            except BusError:
                if self._nc is None or self._nc.is_closed or self._closing:
                    raise
                log.debug("NATS flush took over %g s; waiting on", timeout)

    async def publish_event(self, subject: str, data: bytes, msg_id: str) -> None:
        """Publish durably: JetStream ack with dedupe by msg id; else publish and flush."""
        if self.jetstream:
            with _translate(f"publish event {subject}"):
                await self._jetstream().publish(
                    subject, data, headers={"Nats-Msg-Id": msg_id}, timeout=5.0
                )
            return
        with _translate(f"publish event {subject}"):
            await self._c.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
            await settle(self._c, 5)
