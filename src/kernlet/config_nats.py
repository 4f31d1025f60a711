"""The ``[nats]`` table: how the agent reaches the NATS server, authenticates and verifies it
(re-exported by :mod:`kernlet.config`)."""

from __future__ import annotations

import importlib.util
import ssl
from pathlib import Path

from pydantic import model_validator

from kernlet.config_base import ConfigError, Section

__all__ = ["NatsSection"]


class NatsSection(Section):
    url: str = "nats://127.0.0.1:4222"
    subject_prefix: str = "kernlet"
    #: one way to authenticate: user and password, a token, or a .creds file (JWT and nkey)
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: Path | None = None
    #: CA file that enables TLS when set (verifies the server's certificate)
    tls_ca: Path | None = None
    #: the agent's own certificate and key (PEM), for servers that require client certs
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: publish events into a JetStream stream when the server has JetStream
    jetstream: bool = True
    stream_name: str = "KERNLET_EVENTS"

    @model_validator(mode="after")
    def _auth(self) -> NatsSection:
        ways = [k for k, v in (("user", self.user), ("token", self.token),
                               ("creds", self.creds)) if v is not None]
        if len(ways) > 1:
            raise ValueError(f"use one of user/password, token, creds; not {' and '.join(ways)}")
        if self.password is not None and self.user is None:
            raise ValueError("password needs user")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls-cert and tls-key go together")
        return self

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context these settings ask for (None: plain TCP, unless the URL says
        ``tls://``). ConfigError, naming the key, when a file cannot be loaded."""
        if self.tls_ca is None and self.tls_cert is None:
            return None
        try:
            ctx = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"nats.tls-ca: cannot load {self.tls_ca}: {exc}") from exc
        if self.tls_cert is not None:
            try:
                ctx.load_cert_chain(str(self.tls_cert), str(self.tls_key))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"nats.tls-cert/tls-key: cannot load {self.tls_cert} and "
                                  f"{self.tls_key}: {exc}") from exc
        return ctx

    def check_files(self) -> None:
        """Load what the files name, once at start: a missing or broken one is a ConfigError."""
        self.tls_context()
        if self.creds is not None:
            if not self.creds.is_file():
                raise ConfigError(f"nats.creds: no such file: {self.creds}")
            if importlib.util.find_spec("nkeys") is None:
                raise ConfigError("nats.creds: needs the nkeys package "
                                  "(pip install 'nats-py[nkeys]')")
