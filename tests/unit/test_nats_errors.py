"""How the NATS driver tells a failed connection attempt: the reason an operator reads."""

from __future__ import annotations

import logging

import nats.errors
import pytest

from kernlet.drivers.nats import BusSettings, NatsDriver

URL = "nats://127.0.0.1:1"


def refused() -> Exception:
    return nats.errors.Error("nats: 'Authorization Violation'")


def test_a_reset_after_a_refusal_keeps_the_refusal_as_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that refuses the credentials closes the socket: the reset that follows is
    the same failure, not a new reason, so it is neither logged again nor shown instead."""
    driver = NatsDriver(BusSettings(URL, token="wrong"))
    with caplog.at_level(logging.WARNING, logger="kernlet.drivers.nats"):
        for _ in range(5):
            driver._error(refused())
            driver._error(ConnectionResetError(104, "Connection reset by peer"))
            driver._error(nats.errors.UnexpectedEOF())
    assert driver.failures == 15
    assert (driver.last_error or "").startswith("authorization violation")
    told = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(told) == 1
    assert told[0].levelno == logging.ERROR


def test_a_reset_first_is_told_then_the_refusal_replaces_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = NatsDriver(BusSettings(URL, token="wrong"))
    with caplog.at_level(logging.WARNING, logger="kernlet.drivers.nats"):
        driver._error(ConnectionResetError(104, "Connection reset by peer"))
        assert (driver.last_error or "").startswith("ConnectionResetError")
        driver._error(refused())
    assert (driver.last_error or "").startswith("authorization violation")
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR]


def test_a_refused_connection_after_a_refusal_is_a_new_reason() -> None:
    """The server went away (nothing listens): that is news, not the old refusal."""
    driver = NatsDriver(BusSettings(URL, token="wrong"))
    driver._error(refused())
    driver._error(ConnectionRefusedError(111, "Connection refused"))
    assert (driver.last_error or "").startswith("ConnectionRefusedError")


def test_a_reset_on_tls_with_nothing_better_says_what_it_likely_means() -> None:
    """TLS 1.3 checks a client's certificate after the client's handshake is done: the
    server's alert and its reset race, and the reset alone must still name TLS."""
    driver = NatsDriver(BusSettings("tls://127.0.0.1:1"))
    driver._error(ConnectionResetError(104, "Connection reset by peer"))
    assert (driver.last_error or "").startswith("TLS failed: the server closed")
    assert "client certificate" in (driver.last_error or "")
