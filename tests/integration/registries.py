"""Test helper: a docker-registry of the test's own on a free loopback port, with its own
storage dir, optionally with htpasswd (bcrypt) authentication; stopped at the end."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from integration.servers import stop_process
from kernlet.halfstack import probe_registry, registry_config


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:PORT
    port: int
    username: str
    password: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def registry(root: Path, username: str = "", password: str = "") -> Iterator[Registry]:
    """Start one; with ``username`` and ``password``, it wants them (htpasswd)."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry missing: run `kernlet halfstack up`"
    root.mkdir(parents=True, exist_ok=True)
    htpasswd = None
    if username:
        htpasswd = root / "htpasswd"
        digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        htpasswd.write_text(f"{username}:{digest}\n")
    port = _free_port()
    config = root / "config.yml"
    config.write_text(registry_config(root / "storage", f"127.0.0.1:{port}", htpasswd))
    log = root / "registry.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not probe_registry(port=port).answering:
            assert proc.poll() is None, f"registry exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "registry did not start"
            time.sleep(0.1)
        yield Registry(f"127.0.0.1:{port}", port, username, password, log)
    finally:
        stop_process(proc)
