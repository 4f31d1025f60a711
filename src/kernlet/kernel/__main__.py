"""``python3 -m kernlet.kernel --socket PATH``: the in-container runtime's entry point."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from kernlet.kernel.server import serve


def _default_workdir() -> str:
    env = os.environ.get("KERNLET_WORKDIR")
    if env:
        return env
    if Path("/home/work").is_dir():
        return "/home/work"
    return str(Path.cwd())


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
    parser.add_argument("--log-level", default=os.environ.get("KERNLET_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    workdir = args.workdir or _default_workdir()
    asyncio.run(serve(args.socket, workdir, args.buffer_limit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
