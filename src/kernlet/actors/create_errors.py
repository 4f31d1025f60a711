"""What a failed create says: the setting whose window ran out, and the container's last output.

A kernel whose runtime does not come up fails its create with a :class:`RuntimeUnavailable`
whose message names the window and its key (``not ready after 300 s (agent.create-timeout)``)
or carries the runtime's own error (``the kernel did not answer within 300 s
(agent.create-timeout)``), followed by the last lines the container printed (the runtime's log,
the ipykernel's traceback, the bootstrap script's complaints), so that the caller sees why
without a shell on the node.

- :func:`last_output`: the container's last lines, capped; never raises
- :func:`connect_runtime`: the create's wait for its runtime, with both in its error
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from kernlet.drivers.runtime import RuntimeChannel
from kernlet.errors import KernletError, RuntimeUnavailable
from kernlet.layout import CREATE_TIMEOUT_KEY

__all__ = ["OUTPUT_BYTES", "OUTPUT_LINES", "connect_runtime", "last_output", "with_output"]

log = logging.getLogger(__name__)

#: lines of the container's output put in a failed create's error
OUTPUT_LINES = 20
#: at most this many bytes of them (the end is kept)
OUTPUT_BYTES = 2048
#: seconds the logs call may take; past it the error says the output could not be read (the
#: create has failed already: this bounds only how long its error takes to be told)
LOGS_TIMEOUT = 10.0


class LogSource(Protocol):
    """What :func:`last_output` needs of the Docker driver."""

    async def logs(self, container_id: str, tail: int = ...) -> str: ...


async def last_output(docker: LogSource, container_id: str, lines: int = OUTPUT_LINES) -> str:
    """The container's last ``lines`` lines of stdout and stderr, at most :data:`OUTPUT_BYTES`
    (the end kept, cut at a line start). Never raises: it is read while an error is being
    reported, so an empty or unreadable log gives a note in parentheses instead."""
    if not container_id:
        return "(no container was created)"
    try:
        text = await asyncio.wait_for(docker.logs(container_id, tail=lines), LOGS_TIMEOUT)
    except TimeoutError:
        return f"(its output could not be read within {LOGS_TIMEOUT:g} s)"
    except (KernletError, OSError) as exc:
        log.warning("logs of %s: %s", container_id[:12], exc)
        return f"(its output could not be read: {exc})"
    text = text.rstrip("\n")
    if not text.strip():
        return "(the container printed nothing)"
    raw = text.encode("utf-8", "replace")
    if len(raw) <= OUTPUT_BYTES:
        return text
    tail = raw[-OUTPUT_BYTES:].decode("utf-8", "ignore")
    cut = tail.find("\n")
    if 0 <= cut < len(tail) - 1:
        tail = tail[cut + 1 :]
    return "[...]\n" + tail


_OUTPUT_HEADING = "\nthe container's last output:\n"


def with_output(message: str, output: str) -> str:
    """An error message followed by the container's last output (from :func:`last_output`);
    a message that carries it already is returned as it is."""
    if _OUTPUT_HEADING in message:
        return message
    return f"{message}{_OUTPUT_HEADING}{output}"


async def connect_runtime(
    channel: RuntimeChannel,
    docker: LogSource,
    container_id: str,
    timeout: float,
    key: str = CREATE_TIMEOUT_KEY,
) -> dict[str, Any]:
    """A create's wait for its runtime: connect within ``timeout`` (the value of ``key``); its
    status. If the runtime does not come up, RuntimeUnavailable naming ``key`` and the value
    (or carrying the runtime's own error) with the container's last output."""
    try:
        return await channel.connect(timeout, key=key)
    except RuntimeUnavailable as exc:
        output = await last_output(docker, container_id)
        raise RuntimeUnavailable(with_output(exc.message, output)) from exc
