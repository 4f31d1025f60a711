"""The floor for an exec round trip: jupyter_client against an ipykernel on the host.

Same transport as the runtime uses in the container (ZeroMQ ``ipc``), and the same end of a
run: the ``execute_reply`` on shell AND the kernel's ``idle`` status on iopub (the runtime
waits for both, since the reply can overtake the last output). Blocking client, on a thread.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["host_exec_times"]


def _wait(kc: Any, msg_id: str, timeout: float = 30.0) -> None:
    replied = idle = False
    deadline = time.monotonic() + timeout
    while not (replied and idle):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no reply/idle for {msg_id}")
        if not replied and kc.shell_channel.msg_ready():
            msg = kc.get_shell_msg(timeout=left)
            replied = msg["parent_header"].get("msg_id") == msg_id or replied
            continue
        if not idle and kc.iopub_channel.msg_ready():
            msg = kc.get_iopub_msg(timeout=left)
            idle = idle or (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["msg_type"] == "status"
                and msg["content"].get("execution_state") == "idle"
            )
            continue
        # nothing buffered: block on whichever we still need (zmq poll, no busy wait)
        if not replied:
            kc.shell_channel.socket.poll(int(left * 1000))
        else:
            kc.iopub_channel.socket.poll(int(left * 1000))


def host_exec_times(code: str, runs: int, warmup: int = 20) -> list[float]:
    """Seconds per round trip of ``code`` on a fresh host ipykernel (``runs`` timed runs)."""
    from jupyter_client.manager import KernelManager

    with tempfile.TemporaryDirectory(prefix="kernlet-bench-ipk-") as tmp:
        km = KernelManager(kernel_name="python3")
        km.transport = "ipc"
        km.ip = str(Path(tmp) / "kernel-ipc")
        km.connection_file = str(Path(tmp) / "connection.json")
        km.start_kernel()
        kc = km.blocking_client()
        kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        try:
            kc.wait_for_ready(timeout=60)
            times = []
            for i in range(warmup + runs):
                t0 = time.perf_counter()
                _wait(kc, kc.execute(code, silent=False, store_history=True))
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
            return times
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
