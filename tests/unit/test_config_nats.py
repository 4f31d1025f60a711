"""The [nats] section's security keys: one way to authenticate, TLS files loaded at start."""

from __future__ import annotations

import re
import ssl
import subprocess
from pathlib import Path

import pytest

from kernlet.config import AgentConfig, ConfigError, NatsSection, load_config


def _load(tmp_path: Path, nats: str) -> AgentConfig:
    path = tmp_path / "agent.toml"
    path.write_text(f"[nats]\n{nats}")
    return load_config(path)


@pytest.mark.parametrize(
    ("nats", "message"),
    [
        ('user = "a"\ntoken = "t"\n', "use one of user/password, token, creds; not user and token"),
        ('token = "t"\ncreds = "/x.creds"\n', "not token and creds"),
        ('password = "p"\n', "password needs user"),
        ('tls-cert = "/c.pem"\n', "tls-cert and tls-key go together"),
        ('tls-key = "/k.pem"\n', "tls-cert and tls-key go together"),
    ],
)
def test_conflicting_keys_are_refused(tmp_path: Path, nats: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _load(tmp_path, nats)


def test_a_missing_ca_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent\.toml: nats\.tls-ca: cannot load .*nope\.pem"):
        _load(tmp_path, f'tls-ca = "{tmp_path / "nope.pem"}"\n')


def test_a_broken_client_cert_is_a_config_error(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "c.key"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    with pytest.raises(ConfigError, match=r"nats\.tls-cert/tls-key: cannot load"):
        _load(tmp_path, f'tls-cert = "{cert}"\ntls-key = "{key}"\n')


def test_creds_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nats\.creds: no such file"):
        _load(tmp_path, f'creds = "{tmp_path / "agent.creds"}"\n')


def test_tls_context_verifies_against_the_ca(tmp_path: Path) -> None:
    """A CA file makes a verifying context (hostname and chain); none means no TLS."""
    ca = tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tmp_path / "ca.key"),
                    "-out", str(ca), "-days", "1", "-subj", "/CN=test CA"],
                   check=True, capture_output=True)
    ctx = _load(tmp_path, f'url = "tls://127.0.0.1:4222"\ntls-ca = "{ca}"\n').nats.tls_context()
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "test CA"),),)]
    assert NatsSection().tls_context() is None
