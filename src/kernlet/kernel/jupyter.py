"""The ipykernel's process and channels, through jupyter_client.

jupyter_client's AsyncKernelManager starts, interrupts and restarts the kernel; the
AsyncKernelClient's channels are zmq.asyncio sockets, which :func:`read_channel` reads itself
and decodes with :func:`decode`. Works with jupyter_client 7.4 (Debian bookworm, in the
kernel image) and 8.x (the host venv). jupyter_client is imported when a kernel is started,
not when this module is.

The kernel is the one the image names: ``$KERNLET_JUPYTER_KERNEL`` (which ``kernlet image
build`` sets from the image's ``ai.kernlet.jupyter-kernel`` label, e.g. ``ir`` for R) is a
kernelspec looked up in Jupyter's usual directories (/usr/share/jupyter/kernels, ...) and
started from its argv. Without it, the kernel is started from a kernelspec this module
writes, whose argv is this very interpreter running ``ipykernel_launcher``: the runtime and
the kernel always share one Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("kernlet.kernel.query")

__all__ = [
    "KERNEL_ENV",
    "close_channels",
    "connect",
    "decode",
    "kernel_language",
    "kernel_pid",
    "kick",
    "read_channel",
    "start_kernel",
    "stop_kernel",
]

Handler = Callable[[dict[str, Any]], None]

_DELIM = b"<IDS|MSG>"
#: Not jupyter_client's native "python3": for that name its KernelSpecManager imports
#: ipykernel.kernelspec, which in ipykernel 6 (the image's) imports the kernel's whole stack
#: (IPython, debugpy: 600 modules, 32 MiB) into the runtime, which never uses it.
KERNEL_NAME = "kernlet-python3"
#: The environment variable naming the image's kernelspec (kernlet.images.JUPYTER_KERNEL_ENV:
#: the runtime does not import the agent's modules).
KERNEL_ENV = "KERNLET_JUPYTER_KERNEL"
#: Messages read from a ready channel before yielding to the event loop.
_BURST = 64


def decode(session: Any, parts: list[bytes]) -> dict[str, Any]:
    """A Jupyter wire message as a dict with header, parent_header, msg_type and content.

    Session.deserialize also parses every date in the headers, adapts protocol versions and
    keeps a replay-digest set: that is three quarters of the runtime's CPU per trivial run, and
    none of it is needed here (a private ipc channel to a kernel of protocol 5.x). The HMAC
    signature is still checked.
    """
    idx = parts.index(_DELIM)
    signature, header, parent, metadata, content = parts[idx + 1 : idx + 6]
    if session.auth is not None and not hmac.compare_digest(
        signature, session.sign([header, parent, metadata, content])
    ):
        raise ValueError("invalid signature on a message from the kernel")
    unpack = session.unpack
    head = unpack(header)
    return {
        "header": head,
        "msg_type": head.get("msg_type"),
        "parent_header": unpack(parent),
        "content": unpack(content),
    }


def _write_kernelspec(base: Path) -> Path:
    spec_dir = base / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [
            sys.executable,
            "-Xfrozen_modules=off",  # else ipykernel's debugger warns at every start
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
        ],
        "display_name": "Python 3 (kernlet)",
        "language": "python",
        "interrupt_mode": "signal",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return base / "kernels"


async def start_kernel(base: Path, workdir: str) -> Any:
    """Launch the ipykernel (kernelspec and connection file under ``base``, cwd ``workdir``);
    returns its kernel manager."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    named = os.environ.get(KERNEL_ENV, "").strip()
    if named:
        # Jupyter's own search path (user, env, system dirs); never the native ipykernel.
        ksm = KernelSpecManager(ensure_native_kernel=False)
        ksm.get_kernel_spec(named)  # NoSuchKernel, naming it, when the image lacks it
    else:
        ksm = KernelSpecManager(
            kernel_dirs=[str(_write_kernelspec(base))], ensure_native_kernel=False
        )
    km = AsyncKernelManager(kernel_name=named or KERNEL_NAME, kernel_spec_manager=ksm)
    km.connection_file = str(base / "connection.json")
    # Unix sockets beside the connection file: no TCP ports open in the container.
    km.transport = "ipc"
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop("PYTHONSTARTUP", None)
    # ipykernel's debugger otherwise warns about frozen modules at every start.
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    await km.start_kernel(env=env, cwd=workdir)
    return km


def kernel_language(km: Any) -> str:
    """The language of ``km``'s kernelspec, lower case ("python", "r"); "python" unknown."""
    spec = getattr(km, "kernel_spec", None)
    return str(getattr(spec, "language", "") or "python").lower()


def connect(km: Any) -> Any:
    """A kernel client of ``km`` with its shell, iopub and stdin channels open."""
    kc = km.client()
    # shell= names the Jupyter shell channel, not a system shell.
    kc.start_channels(shell=True, iopub=True, stdin=True, hb=False, control=False)  # noqa: S604
    return kc


def close_channels(kc: Any) -> None:
    """Close ``kc``'s channels (None: nothing to close)."""
    if kc is not None:
        with contextlib.suppress(Exception):
            kc.stop_channels()


def kick(kc: Any) -> None:
    """Have each of ``kc``'s sockets look again for messages it holds.

    zmq's FD is edge-triggered: a wake-up consumed by another call on the socket would leave
    a message unread until the next event. pyzmq's asyncio socket schedules its waiting
    receivers when ``get(zmq.EVENTS)`` finds input (its own remedy, after each operation);
    calling it costs a system call per socket.
    """
    import zmq

    for name in ("shell_channel", "iopub_channel", "stdin_channel"):
        socket = getattr(getattr(kc, name, None), "socket", None)
        if socket is not None:
            with contextlib.suppress(zmq.ZMQError):
                socket.get(zmq.EVENTS)


def kernel_pid(km: Any) -> int | None:
    try:
        proc = km.provisioner.process  # jupyter_client >= 7
    except AttributeError:
        proc = getattr(km, "kernel", None)
    return getattr(proc, "pid", None)


async def read_channel(channel: Any, session: Any, handle: Handler) -> None:
    """Decode every message of ``channel`` and pass it to ``handle``, until it closes."""
    socket = channel.socket
    count = 0
    while True:
        try:
            parts = await socket.recv_multipart()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("kernel channel closed")
            return
        try:
            handle(decode(session, parts))
        except Exception:
            log.exception("bad message from the kernel")
        count += 1
        if count % _BURST == 0:
            # A ready socket's recv does not yield; let the loop write output meanwhile.
            await asyncio.sleep(0)


async def stop_kernel(km: Any, kc: Any) -> None:
    """Close the channels and kill the kernel; either may be None (never started)."""
    close_channels(kc)
    if km is not None:
        with contextlib.suppress(Exception):
            await km.shutdown_kernel(now=True)
