"""Probes: whether a service answers, asked with the standard library only.

They work before any service (or any client library) is installed: docker is asked ``GET
/_ping`` over its unix socket, nats for its ``INFO`` line and ``/jsz``, etcd for ``/health``,
redis for ``PONG``.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.request
from dataclasses import dataclass

DOCKER_SOCKET = "/var/run/docker.sock"
LOOPBACK = "127.0.0.1"
NATS_PORT, NATS_MONITOR_PORT = 4222, 8222
ETCD_PORT, ETCD_PEER_PORT = 2379, 2380
REDIS_PORT = 6379


@dataclass(frozen=True)
class Probe:
    """The outcome of asking a service whether it answers."""

    answering: bool
    detail: str = ""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def probe_docker(path: str = DOCKER_SOCKET, timeout: float = 2.0) -> Probe:
    """``GET /_ping`` over Docker's unix socket."""
    conn = _UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        body = resp.read(64).decode(errors="replace")
        version = resp.getheader("Api-Version") or "?"
    except OSError as exc:
        return Probe(False, f"{path}: {_why(exc)}")
    except http.client.HTTPException as exc:
        return Probe(False, f"{path}: not HTTP ({exc.__class__.__name__})")
    finally:
        conn.close()
    if resp.status == 200 and body.strip() == "OK":
        return Probe(True, f"API {version}")
    return Probe(False, f"/_ping answered {resp.status} {body.strip()!r}")


def _why(exc: Exception) -> str:
    """A short reason: "Connection refused" rather than "<urlopen error [Errno 111] ...>"."""
    reason = getattr(exc, "reason", None)  # urllib's URLError wraps the OSError
    if isinstance(reason, Exception):
        exc = reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(reason or exc) or exc.__class__.__name__


def _http_get_json(url: str, timeout: float) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback http only)
        return json.loads(resp.read())


def _read_line(host: str, port: int, timeout: float, limit: int, send: bytes = b"") -> str:
    """Connect over TCP, send ``send`` (if any) and return the first line the server sends."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if send:
            sock.sendall(send)
        return sock.makefile("rb").readline(limit).decode(errors="replace")


def probe_nats(
    host: str = LOOPBACK,
    port: int = NATS_PORT,
    monitor_port: int = NATS_MONITOR_PORT,
    timeout: float = 2.0,
) -> Probe:
    """TCP connect and read the server's ``INFO``; then ``/jsz`` on the monitoring port."""
    try:
        line = _read_line(host, port, timeout, limit=65536)
    except OSError as exc:
        return Probe(False, _why(exc))
    if not line.startswith("INFO "):
        return Probe(False, f"{host}:{port} is not NATS (said {line[:40]!r})")
    try:
        info = json.loads(line[5:])
    except ValueError:
        info = {}
    version = info.get("version", "?") if isinstance(info, dict) else "?"
    try:
        jsz = _http_get_json(f"http://{host}:{monitor_port}/jsz", timeout)
    except (OSError, ValueError) as exc:
        return Probe(True, f"nats {version}; JetStream unknown (/jsz: {_why(exc)})")
    enabled = isinstance(jsz, dict) and not jsz.get("disabled") and "config" in jsz
    return Probe(True, f"nats {version}; JetStream {'enabled' if enabled else 'DISABLED'}")


def probe_etcd(host: str = LOOPBACK, port: int = ETCD_PORT, timeout: float = 2.0) -> Probe:
    """``GET /health``."""
    try:
        health = _http_get_json(f"http://{host}:{port}/health", timeout)
    except (OSError, ValueError) as exc:
        return Probe(False, _why(exc))
    if isinstance(health, dict) and health.get("health") == "true":
        return Probe(True, "healthy")
    return Probe(False, f"/health answered {health!r}")


def probe_redis(host: str = LOOPBACK, port: int = REDIS_PORT, timeout: float = 2.0) -> Probe:
    """``PING``, expecting ``+PONG``."""
    try:
        reply = _read_line(host, port, timeout, limit=1024, send=b"PING\r\n").strip()
    except OSError as exc:
        return Probe(False, _why(exc))
    if reply == "+PONG":
        return Probe(True, "PONG")
    return Probe(False, f"PING answered {reply[:60]!r}")
