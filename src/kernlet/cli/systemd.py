"""``kernlet systemd-unit``: print the agent's systemd unit (``Type=notify``: the agent tells
systemd it is ready once it serves NATS and the watcher, see kernlet.sdnotify).

contrib/systemd/kernlet-agent.service is this command's output with its defaults (a unit test
keeps the two equal).
"""

from __future__ import annotations

from pathlib import Path

import click

from kernlet.cli import main

DEFAULT_EXEC = "/opt/kernlet/.venv/bin/kernlet"

UNIT = """\
# kernlet agent as a systemd service (`kernlet systemd-unit` writes this file).
#
# Stopping or restarting the service leaves kernels running: they live in Docker, not in
# this unit's cgroup, and the next start re-adopts them from the event log. To destroy every
# kernel, run `kernlet kernel reset` (or POST /agent/reset on the watcher) explicitly.
[Unit]
Description=kernlet compute-node agent
Documentation=file:///opt/kernlet/docs/recovery.md
Requires=docker.service
After=network-online.target docker.service
Wants=network-online.target

[Service]
# the agent sends READY=1 over $NOTIFY_SOCKET once it serves (NATS commands, the watcher)
Type=notify
NotifyAccess=main
# replay of a long event log and NATS reconnects can take a while
TimeoutStartSec=120
User=root
Group=root
{exec_start}
# SIGTERM: record agent_terminated, close runtime channels, leave containers running
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=30
# a crash (even SIGKILL) is safe to restart from: replay + reconcile
Restart=always
RestartSec=2
# the event log, scratch and runtime dirs (agent.var-dir)
StateDirectory=kernlet
LimitNOFILE=524288

[Install]
WantedBy=multi-user.target
"""


def render(executable: str = DEFAULT_EXEC, config: Path | None = None) -> str:
    """The unit text; ``config`` None: the agent searches its usual paths."""
    exec_start = f"ExecStart={executable} agent"
    if config is not None:
        exec_start += f" --config {config}"
    else:
        exec_start = "# the agent reads /etc/kernlet/agent.toml (or pass --config)\n" + exec_start
    return UNIT.format(exec_start=exec_start)


@main.command("systemd-unit")
@click.option("--exec", "executable", default=DEFAULT_EXEC, show_default=True,
              help="path of the kernlet command the unit runs")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="agent.toml to pass with --config (default: the agent's search path)")
def systemd_unit(executable: str, config: Path | None) -> None:
    """Print a systemd unit for the agent (Type=notify, Restart=always); save it as
    /etc/systemd/system/kernlet-agent.service."""
    click.echo(render(executable, config), nl=False)
