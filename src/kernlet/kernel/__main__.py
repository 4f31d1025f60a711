"""``python3 -m kernlet.kernel --socket PATH``: the in-container runtime's entry point."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from kernlet.kernel.server import serve
from kernlet.layout import CREATE_TIMEOUT_KEY, DEFAULT_START_TIMEOUT, START_TIMEOUT_ENV


def _default_workdir() -> str:
    env = os.environ.get("KERNLET_WORKDIR")
    if env:
        return env
    if Path("/home/work").is_dir():
        return "/home/work"
    return str(Path.cwd())


def start_timeout_from_env(environ: Mapping[str, str]) -> tuple[float, str]:
    """Seconds the ipykernel may take to start, from ``$KERNLET_START_TIMEOUT`` (the agent's
    ``agent.create-timeout``), and the name of where it came from, for the error that it
    causes. Absent (an older agent): the default. ValueError if it is not a positive number."""
    raw = environ.get(START_TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_START_TIMEOUT, f"the runtime's default: {START_TIMEOUT_ENV} is not set"
    return _seconds(raw, START_TIMEOUT_ENV), CREATE_TIMEOUT_KEY


def _seconds(raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what}: not a positive number of seconds: {raw!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m kernlet.kernel", description=__doc__)
    parser.add_argument("--socket", required=True, help="unix socket path to serve the agent on")
    parser.add_argument(
        "--workdir",
        default=None,
        help="where code runs (default: $KERNLET_WORKDIR, /home/work if it exists, else cwd)",
    )
    parser.add_argument(
        "--buffer-limit",
        type=int,
        default=64 * 1024 * 1024,
        help="bytes of run output kept while the agent is away (default 64 MiB)",
    )
    parser.add_argument(
        "--start-timeout",
        default=None,
        metavar="SECONDS",
        help=f"seconds the ipykernel may take to start (default: ${START_TIMEOUT_ENV}, "
        f"which the agent sets to {CREATE_TIMEOUT_KEY}; {DEFAULT_START_TIMEOUT:g} without it)",
    )
    parser.add_argument("--log-level", default=os.environ.get("KERNLET_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    try:
        if args.start_timeout is not None:
            start_timeout = _seconds(args.start_timeout, "--start-timeout"), "--start-timeout"
        else:
            start_timeout = start_timeout_from_env(os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    workdir = args.workdir or _default_workdir()
    asyncio.run(serve(args.socket, workdir, args.buffer_limit, *start_timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
