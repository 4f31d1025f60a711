"""``python -m kernlet.agent [--config FILE]``: run the agent in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kernlet.config import ConfigError, load_config
from kernlet.service import AgentService

__all__ = ["main", "run_agent"]


def run_agent(config: Path | None, debug: bool = False) -> int:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        print(f"kernlet: invalid configuration: {exc}", file=sys.stderr)
        return 2
    return AgentService(cfg).run_until_signalled()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernlet.agent", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="agent.toml to use")
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    args = parser.parse_args(argv)
    return run_agent(args.config, args.debug)


if __name__ == "__main__":
    sys.exit(main())
