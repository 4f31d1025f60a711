"""Private instances of the half stack's servers, for tests that stop and start them.

Each runs on a free loopback port, is started and stopped by its own pid (never by name),
and is waited for until it accepts connections.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["ConfiguredNats", "PrivateEtcd", "PrivateNats", "PrivateRedis", "free_port", "port_open",
           "stop_process"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """End a server this test started, by its own pid: SIGTERM, then SIGKILL if it has not
    exited within ``timeout``; returns its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class PrivateServer:
    """Subclasses say which binary and which arguments."""

    binary = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> None:
        path = shutil.which(self.binary)
        assert path, f"{self.binary} missing: run `kernlet halfstack up`"
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([path, *self.argv()], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            assert self.proc.poll() is None, f"private {self.binary} exited"
            assert time.monotonic() < deadline, f"private {self.binary} did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class PrivateRedis(PrivateServer):
    binary = "redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return ["--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.root)]


class PrivateNats(PrivateServer):
    binary = "nats-server"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return ["-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.root)]


class ConfiguredNats(PrivateNats):
    """A private nats-server run from a config file the test writes: ``body`` is added to
    the listen address and the JetStream store (e.g. a ``tls {...}`` block and
    ``authorization {...}``). Its log is ``root/nats.log``."""

    def __init__(self, root: Path, body: str, scheme: str = "nats") -> None:
        super().__init__(root)
        self.body = body
        self.scheme = scheme

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "nats.log"

    def argv(self) -> list[str]:
        conf = self.root / "nats.conf"
        conf.write_text(f"listen: 127.0.0.1:{self.port}\n"
                        f"jetstream {{ store_dir: {json.dumps(str(self.root / 'js'))} }}\n"
                        f"{self.body}\n")
        return ["-c", str(conf), "-l", str(self.log)]


class PrivateEtcd(PrivateServer):
    binary = "etcd"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.peer = free_port()

    def argv(self) -> list[str]:
        client, peer = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.peer}"
        return ["--name", "t", "--data-dir", str(self.root / "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"t={peer}"]
