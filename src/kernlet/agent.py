"""``python -m kernlet.agent [--config FILE] [--log-level LEVEL]``: the same command as
``kernlet agent``, which runs the agent in the foreground."""

from __future__ import annotations

import sys
from pathlib import Path

from kernlet import logs
from kernlet.config import ConfigError, load_config

__all__ = ["main", "run_agent"]


def run_agent(config: Path | None, log_level: str | None = None) -> int:
    """Load the configuration, set up logging ([logging], ``log_level`` overriding its level)
    and serve until a signal. Returns the process's exit status (2: invalid configuration)."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        print(f"kernlet: invalid configuration: {exc}", file=sys.stderr)
        return 2
    try:
        logs.configure(log_level or cfg.logging.level, cfg.logging.format, cfg.logging.file)
    except OSError as exc:
        print(f"kernlet: invalid configuration: logging.file: {exc}", file=sys.stderr)
        return 2
    from kernlet.service import AgentService

    return AgentService(cfg).run_until_signalled()


def main(argv: list[str] | None = None) -> None:
    """``kernlet agent`` (the same click command, subcommands included) under the name
    ``python -m kernlet.agent``; exits with the command's status."""
    from kernlet.cli.agent import agent

    agent.main(argv, prog_name="python -m kernlet.agent")


if __name__ == "__main__":
    main()
