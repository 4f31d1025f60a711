"""Batch mode: clean, build and exec shell commands run in order in the work directory.

Each command runs as ``/bin/sh -c COMMAND`` in its own process group (its own session), with
stdin from /dev/null; stdout and stderr stream to the agent as they come, decoded
incrementally as UTF-8 (invalid bytes replaced). An interrupt sends SIGINT to the group and
SIGKILL 2 s later if anything of it is still there; the remaining steps are then skipped.

Exit codes: a command's own exit status, or 128 + N when signal N ended it. A run whose
build failed skips exec and finishes with 127; an interrupted run finishes with the
interrupted command's code (130 for SIGINT, 137 after the SIGKILL).

``*`` as a command means "the usual thing": nothing for clean and build; for exec,
``python3 main.py`` when main.py exists in the work directory (else exit 127).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("kernlet.kernel.batch")

__all__ = ["EXIT_SKIPPED", "BatchEngine"]

Emit = Callable[[str, Any], None]

#: The exit code of a run whose exec step was skipped because the build failed.
EXIT_SKIPPED = 127
#: Seconds between SIGINT and SIGKILL on interrupt.
KILL_GRACE = 2.0
#: Seconds to wait for the pipes after the shell exited (background children may hold them).
PIPE_GRACE = 1.0
READ_SIZE = 64 * 1024


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class BatchEngine:
    """Runs one batch run at a time; ``interrupt`` stops the current command."""

    def __init__(self, workdir: str, room: Callable[[], Awaitable[None]]) -> None:
        self.workdir = workdir
        self._room = room  # waits while the agent is behind (backpressure on the pipes)
        self._proc: asyncio.subprocess.Process | None = None
        self._interrupted = False

    @property
    def busy(self) -> bool:
        return self._proc is not None

    def _resolve(self, step: str, given: Any) -> str | None:
        if given is None:
            return None
        cmd = str(given).strip()
        if not cmd:
            return None
        if cmd == "*":
            if step == "exec" and (Path(self.workdir) / "main.py").is_file():
                return f"{shlex.quote(sys.executable)} main.py"
            if step == "exec":
                return "echo 'kernlet: exec is * but there is no main.py' >&2; exit 127"
            return None
        return cmd

    async def execute(self, opts: dict[str, Any], emit: Emit) -> int:
        self._interrupted = False
        clean = self._resolve("clean", opts.get("clean"))
        build = self._resolve("build", opts.get("build"))
        exec_ = self._resolve("exec", opts.get("exec"))
        code = 0
        if clean is not None:
            code = await self._run(clean, emit)
            emit("clean-finished", {"exitCode": code})
            if self._interrupted:
                return code
        if build is not None:
            code = await self._run(build, emit)
            emit("build-finished", {"exitCode": code})
            if self._interrupted:
                return code
            if code != 0:
                return EXIT_SKIPPED
        if exec_ is not None:
            code = await self._run(exec_, emit)
        return code

    async def _run(self, cmd: str, emit: Emit) -> int:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                cmd,
                cwd=self.workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            emit("stderr", f"kernlet: cannot start /bin/sh: {exc}\n")
            return EXIT_SKIPPED
        self._proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        pumps = asyncio.gather(
            self._pump(proc.stdout, "stdout", emit), self._pump(proc.stderr, "stderr", emit)
        )
        try:
            returncode = await proc.wait()
            try:
                await asyncio.wait_for(asyncio.shield(pumps), PIPE_GRACE)
            except TimeoutError:
                log.info("a background process of %r keeps its output open; detaching", cmd)
                pumps.cancel()
        finally:
            self._proc = None
            if not pumps.done():
                pumps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumps
        return _exit_code(returncode)

    async def _pump(self, stream: asyncio.StreamReader, kind: str, emit: Emit) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            await self._room()
            data = await stream.read(READ_SIZE)
            if not data:
                break
            text = decoder.decode(data)
            if text:
                emit(kind, text)
        text = decoder.decode(b"", final=True)
        if text:
            emit(kind, text)

    def interrupt(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._interrupted = True
        self._signal(proc, signal.SIGINT)
        asyncio.get_running_loop().call_later(KILL_GRACE, self._kill, proc)

    def _kill(self, proc: asyncio.subprocess.Process) -> None:
        # The group may outlive its shell; SIGKILL whatever of it is left.
        self._signal(proc, signal.SIGKILL)

    @staticmethod
    def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def kill_all(self) -> None:
        if self._proc is not None:
            self._signal(self._proc, signal.SIGKILL)
