"""The kept output of terminated kernels.

At teardown, once its container has stopped and before it is removed, the last
``container.keep-logs`` bytes of the container's stdout and stderr (the runtime's log, the
bootstrap script's output, anything printed to the container's own streams) are written to
``<log-dir>/kernel-logs/<kernel id>.log``, beside the event log, by a write to a temporary file,
fsync and rename: a file is whole or absent, and it outlives agent restarts. ``get_logs``
answers from it once the kernel has no container. A restart keeps its old container's output
there until the kernel's last teardown replaces it. Files are not pruned (at most keep-logs
bytes per kernel).

- :func:`keep`: read and write a kernel's kept output; never raises
- :func:`read`: the last lines of a kernel's kept output, or None
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from kernlet.actors.create_errors import LOGS_TIMEOUT, LogSource
from kernlet.config import AgentConfig
from kernlet.errors import KernletError

__all__ = ["keep", "kept_path", "read", "tail_bytes"]

log = logging.getLogger(__name__)

#: lines asked of Docker first (it tails by lines); four times more while that gives fewer
#: bytes than wanted and the log has more lines, up to this many times
_FIRST_LINES = 2048
_MAX_ROUNDS = 5


def kept_path(cfg: AgentConfig, kernel_id: str) -> Path:
    return cfg.kept_logs_dir / f"{kernel_id}.log"


async def tail_bytes(docker: LogSource, container_id: str, limit: int) -> str:
    """The container's output, at most its last ``limit`` bytes (cut at a line start when
    there is one)."""
    lines, text = _FIRST_LINES, ""
    for _ in range(_MAX_ROUNDS):
        text = await docker.logs(container_id, tail=lines)
        if len(text.encode("utf-8", "replace")) >= limit or text.count("\n") < lines:
            break
        lines *= 4
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    tail = raw[-limit:].decode("utf-8", "ignore")
    cut = tail.find("\n")
    return tail[cut + 1:] if 0 <= cut < len(tail) - 1 else tail


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


async def keep(cfg: AgentConfig, docker: LogSource, kernel_id: str, container_id: str) -> None:
    """Keep the container's last output for ``get_logs``; a failure is logged, never raised
    (a teardown must not stop on it)."""
    limit = cfg.container.keep_logs
    if not limit or not container_id:
        return
    try:
        text = await asyncio.wait_for(tail_bytes(docker, container_id, limit), LOGS_TIMEOUT)
        await asyncio.to_thread(_write, kept_path(cfg, kernel_id), text)
    except (KernletError, OSError, TimeoutError) as exc:
        log.warning("kernel %s: its output could not be kept: %s", kernel_id, exc)


def read(cfg: AgentConfig, kernel_id: str, tail: int) -> str | None:
    """The last ``tail`` lines of the kernel's kept output; None when none was kept."""
    try:
        text = kept_path(cfg, kernel_id).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    return "".join(text.splitlines(keepends=True)[-tail:])
