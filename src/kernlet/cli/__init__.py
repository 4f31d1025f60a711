"""The ``kernlet`` command: one console script, one subcommand group per concern."""

from __future__ import annotations

import click

from kernlet import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kernlet")
def main() -> None:
    """kernlet: a compute-node agent that runs users' code in kernel containers."""


def _register() -> None:
    # Each module adds its own group or command to ``main``; imported here, after ``main``
    # exists, so that ``kernlet --help`` lists them all.
    import kernlet.cli.agent
    import kernlet.cli.bench
    import kernlet.cli.cluster
    import kernlet.cli.config_cmd
    import kernlet.cli.demo
    import kernlet.cli.doctor
    import kernlet.cli.halfstack
    import kernlet.cli.halfstack_secure
    import kernlet.cli.image
    import kernlet.cli.kernel
    import kernlet.cli.kernel_commit
    import kernlet.cli.kernel_exec
    import kernlet.cli.kernel_files
    import kernlet.cli.log
    import kernlet.cli.notebook
    import kernlet.cli.protocol
    import kernlet.cli.systemd  # noqa: F401


_register()
