"""In-container services of the Python image, started the way the agent starts them.

One container of the real image runs as a kernel does (uid 1000, every capability dropped,
no-new-privileges, the kernlet package mounted read-only, ports published on loopback only,
as the image's ``ai.kernlet.service-ports`` label declares them). Each service is started with
``docker exec`` from its services.json definition through ``launch_argv`` (pid file in the ipc
dir), probed on its host port, used, then stopped through ``stop_argv`` (which reads the pid
file): the port must stop answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

import kernlet
from integration.browser import chromium_page
from kernlet import images
from kernlet.runner.services import (
    ServiceDef,
    launch_argv,
    load_service_defs,
    new_token,
    parse_service_ports,
    stop_argv,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

IMAGE = os.environ.get("KERNLET_TEST_IMAGE", images.DEFAULT_PYTHON_TAG)
LIB = Path(kernlet.__file__).resolve().parent
WORKDIR = "/home/work"
DEFS = load_service_defs()


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:2])}: {proc.stderr.strip()}")
    return proc


@dataclass
class Kernel:
    cid: str
    ipc: Path
    work: Path
    host_ports: dict[str, int]  # service name -> host port
    container_ports: dict[str, int]

    def start(self, name: str, token: str) -> ServiceDef:
        """What the agent's start_service does: docker exec -d, as uid 1000, in the work dir."""
        defn = DEFS[name]
        port = self.container_ports[name]
        env = defn.environ(port=port, token=token, workdir=WORKDIR)
        argv = launch_argv(name, defn.argv(port=port, token=token, workdir=WORKDIR))
        env_args = [f"--env={key}={value}" for key, value in env.items()]
        docker("exec", "-d", "-u", "1000:1000", "-w", WORKDIR, *env_args, self.cid, *argv)
        return defn

    def stop(self, name: str) -> int:
        return docker("exec", "-u", "1000:1000", self.cid, *stop_argv(name), check=False).returncode

    def log(self, name: str) -> str:
        path = self.ipc / f"svc-{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def processes(self) -> list[str]:
        return docker("exec", self.cid, "ps", "-eo", "args=").stdout.splitlines()


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    inspect = docker("image", "inspect", IMAGE, check=False)
    if inspect.returncode != 0:
        pytest.fail(f"image {IMAGE} missing: run `kernlet image build python`")
    labels = json.loads(inspect.stdout)[0]["Config"]["Labels"] or {}
    declared = parse_service_ports(labels.get(images.SERVICE_PORTS_LABEL, ""))
    if {p.name for p in declared} != {"jupyter", "terminal"}:
        pytest.fail(f"{IMAGE} declares no services: run `kernlet image build python --rebuild`")
    root = Path(tempfile.mkdtemp(prefix="kernlet-svc-"))
    ipc, work = root / "ipc", root / "work"
    for path in (ipc, work):
        path.mkdir()
        try:
            os.chown(path, 1000, 1000)
        except PermissionError:
            path.chmod(0o777)
    (work / "hello-services.txt").write_text("hello\n")
    publish = [arg for p in declared for arg in ("-p", f"127.0.0.1::{p.port}")]
    cid = docker(
        "run", "-d", "--init", "--user", "1000:1000", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", *publish,
        "-v", f"{LIB}:/opt/kernlet/lib/kernlet:ro", "-v", f"{ipc}:/opt/kernlet/ipc",
        "-v", f"{work}:{WORKDIR}", "-w", WORKDIR, "-e", f"HOME={WORKDIR}",
        "-e", "PYTHONPATH=/opt/kernlet/lib", "-e", "PYTHONDONTWRITEBYTECODE=1",
        "--label", "kernlet.test=services", IMAGE, "sleep", "300",
    ).stdout.strip()  # fmt: skip
    try:
        host_ports = {}
        for p in declared:
            out = docker("port", cid, f"{p.port}/tcp").stdout.split()
            addr = next(line for line in out if line.startswith("127.0.0.1:"))
            host_ports[p.name] = int(addr.rsplit(":", 1)[1])
        assert all(line.startswith("127.0.0.1:") for line in docker("port", cid).stdout.split()
                   if ":" in line and "->" not in line)  # fmt: skip
        yield Kernel(cid, ipc, work, host_ports, {p.name: p.port for p in declared})
    finally:
        docker("rm", "-f", cid, check=False)
        shutil.rmtree(root, ignore_errors=True)


async def wait_ready(kernel: Kernel, name: str, defn: ServiceDef, token: str) -> float:
    """Probe ready_url until it answers below 500; the seconds it took."""
    url = defn.ready_url(kernel.host_ports[name], token)
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() - started < 30:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url) as resp:
                    if resp.status < 500:
                        assert resp.status == 200, f"{name} answers {resp.status} with its token"
                        return time.monotonic() - started
            await asyncio.sleep(0.1)
    raise AssertionError(f"{name} not ready after 30 s; its log:\n{kernel.log(name)}")


async def answers(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(f"http://127.0.0.1:{port}/") as resp,
        ):
            return resp.status < 500
    except (aiohttp.ClientError, TimeoutError):
        return False


async def stop_and_check_gone(kernel: Kernel, name: str) -> None:
    pid_file = kernel.ipc / f"svc-{name}.pid"
    assert pid_file.read_text().strip().isdigit()
    assert kernel.stop(name) == 0
    assert not pid_file.exists()
    deadline = time.monotonic() + 10
    while await answers(kernel.host_ports[name]):
        assert time.monotonic() < deadline, f"{name} still answers after it was stopped"
        await asyncio.sleep(0.1)
    assert kernel.stop(name) == 3  # stopping again: not running


def test_image_declares_the_services_and_has_their_programs(kernel: Kernel) -> None:
    assert set(kernel.host_ports) == {"jupyter", "terminal"}
    assert kernel.container_ports == {"jupyter": 8888, "terminal": 7681}
    code = "import ipykernel, jupyter_client, msgpack, matplotlib, notebook, terminado, tornado"
    docker("exec", "-u", "1000:1000", kernel.cid, "python3", "-c", code)


async def test_jupyter(kernel: Kernel) -> None:
    token = new_token()
    defn = kernel.start("jupyter", token)
    try:
        await use_jupyter(kernel, defn, token)
    finally:
        kernel.stop("jupyter")


async def use_jupyter(kernel: Kernel, defn: ServiceDef, token: str) -> None:
    await wait_ready(kernel, "jupyter", defn, token)
    base = f"http://127.0.0.1:{kernel.host_ports['jupyter']}"
    auth = {"Authorization": f"token {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api") as resp:
            assert resp.status == 200
            assert (await resp.json())["version"].startswith("6.")
        async with http.get(f"{base}/api/contents", params={"token": token}) as resp:
            assert resp.status == 200
            names = {item["name"] for item in (await resp.json())["content"]}
            assert "hello-services.txt" in names
        async with http.get(f"{base}/api/contents") as resp:
            assert resp.status == 403  # no token
        async with http.get(f"{base}/api/contents", params={"token": "wrong"}) as resp:
            assert resp.status == 403
        async with http.get(defn.user_url(kernel.host_ports["jupyter"], token)) as resp:
            assert resp.status == 200 and "Jupyter" in await resp.text()
        # a kernel starts under the container's restrictions, and ends with the service
        async with http.post(f"{base}/api/kernels", headers=auth, json={}) as resp:
            assert resp.status == 201, await resp.text()
            kid = (await resp.json())["id"]
        async with http.get(f"{base}/api/kernels/{kid}", headers=auth) as resp:
            assert resp.status == 200
    assert any("ipykernel" in line for line in kernel.processes())
    assert not any(token in line for line in kernel.processes())  # not in argv
    await stop_and_check_gone(kernel, "jupyter")
    deadline = time.monotonic() + 10
    while any("ipykernel" in line for line in kernel.processes()):
        assert time.monotonic() < deadline, "the notebook's kernel outlived the service"
        await asyncio.sleep(0.2)


async def read_until(ws: aiohttp.ClientWebSocketResponse, needle: str, timeout: float) -> str:
    seen = ""

    async def read() -> None:
        nonlocal seen
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            kind, *rest = json.loads(msg.data)
            if kind == "stdout":
                seen += rest[0]
                if needle in seen:
                    return

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        pass
    assert needle in seen, f"never saw {needle!r}; got {seen!r}"
    return seen


async def test_terminal(kernel: Kernel) -> None:
    token = new_token()
    defn = kernel.start("terminal", token)
    try:
        await use_terminal(kernel, defn, token)
    finally:
        kernel.stop("terminal")


async def use_terminal(kernel: Kernel, defn: ServiceDef, token: str) -> None:
    await wait_ready(kernel, "terminal", defn, token)
    port = kernel.host_ports["terminal"]
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(defn.user_url(port, token)) as resp:
            assert resp.status == 200
            assert "xterm.js" in await resp.text()
        for params in ({}, {"token": "wrong"}, {"token": ""}):
            async with http.get(base + "/", params=params) as resp:
                assert resp.status == 403
        async with http.get(base + "/xterm.js") as resp:  # the bundled xterm.js is public
            assert resp.status == 200 and b"public/Terminal.js" in await resp.read()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(base + "/websocket")
        assert refused.value.status == 403
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{base}/websocket", params={"token": token}) as ws,
    ):
        await ws.send_str(json.dumps(["set_size", 24, 80]))
        await ws.send_str(json.dumps(["stdin", "echo hel''lo; pwd; id -u\r"]))
        await read_until(ws, f"\rhello\r\n{WORKDIR}\r\n1000\r\n", 10)
        await ws.send_str(json.dumps(["stdin", 'echo "n=$(env | grep -c SERVICE_TOKEN)"\r']))
        await read_until(ws, "\rn=0\r\n", 10)  # the shells do not inherit the token
        assert any(line.startswith("/bin/bash") for line in kernel.processes())
        # stopping the service ends the open session and its shell
        await stop_and_check_gone(kernel, "terminal")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ws.receive(), 5)
    deadline = time.monotonic() + 10
    while any(line.startswith("/bin/bash") for line in kernel.processes()):
        assert time.monotonic() < deadline, "a shell outlived the terminal service"
        await asyncio.sleep(0.2)





SCREEN = (
    "Array.from({length: kernletTerminal.term.rows}, (_, i) =>"
    " kernletTerminal.term._core.buffer.translateBufferLineToString(i, true)).join('\\n')"
)


async def test_terminal_page_works_in_a_browser(kernel: Kernel) -> None:
    """xterm.js (bundled from Debian's node-xterm) runs, types into a shell, shows its output."""
    token = new_token()
    defn = kernel.start("terminal", token)
    await wait_ready(kernel, "terminal", defn, token)
    port = kernel.host_ports["terminal"]
    try:
        async with chromium_page(1000, 600) as tab:
            await tab.call("Page.navigate", url=defn.user_url(port, token))
            await tab.until("window.kernletTerminal && kernletTerminal.socket.readyState === 1")
            assert await tab.until("location.search === '' && location.href") == (
                f"http://127.0.0.1:{port}/"  # the token left the address bar
            )
            await tab.until(f"({SCREEN}).includes('$')")  # the prompt
            for key in "echo browser-$((6*7))\r":  # keystrokes, as a user types them
                await tab.call("Input.dispatchKeyEvent", type="keyDown", text=key,
                               **({"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
                                  if key == "\r" else {}))  # fmt: skip
                await tab.call("Input.dispatchKeyEvent", type="keyUp")
            await tab.until(f"({SCREEN}).includes('\\nbrowser-42')")
            # a reload without ?token= gets in with the cookie set by the first visit
            await tab.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
            await tab.until("window.kernletTerminal && kernletTerminal.socket.readyState === 1")
    finally:
        kernel.stop("terminal")
