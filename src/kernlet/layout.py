"""Names shared by the agent and the in-container runtime: the container's contract.

Both sides import this module: the agent (``kernlet.actors.steps`` builds the container's
environment from it) and the runtime inside the container (``kernlet.kernel``), where only the
standard library exists. So it holds plain constants and one formatter of what the runtime
reports (``describe_start``), and imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BOOTSTRAP_NAME",
    "CLUSTER_JSON_NAME",
    "CONFIG_IN_CONTAINER",
    "CREATE_TIMEOUT_KEY",
    "DEFAULT_START_TIMEOUT",
    "FACTS_NAME",
    "IPC_IN_CONTAINER",
    "LIB_IN_CONTAINER",
    "SOCKET_NAME",
    "SSH_PORT",
    "START_TIMEOUT_ENV",
    "WORK_IN_CONTAINER",
    "describe_start",
]

#: The kernel's work dir (the host's ``<var>/scratch/<kid>/work``, owned by the kernel's uid).
WORK_IN_CONTAINER = "/home/work"
#: The kernel's runtime dir (the host's ``<var>/ipc/<kid>``): the runtime's socket, pid files.
IPC_IN_CONTAINER = "/opt/kernlet/ipc"
#: Where the agent's own ``kernlet`` package is mounted read-only (``PYTHONPATH``).
LIB_IN_CONTAINER = "/opt/kernlet/lib"
#: The kernel's config dir (the host's ``<var>/config/<kid>``, read-only): agent-written facts.
CONFIG_IN_CONTAINER = "/home/config"
#: The kernel's facts (ids, slots, cores, devices, mounts) as JSON, in its config dir.
FACTS_NAME = "kernel.json"
#: The runtime's unix socket, in the runtime dir.
SOCKET_NAME = "runtime.sock"
#: The facts of a kernel's session (docs/sessions.md), in its runtime dir.
CLUSTER_JSON_NAME = "cluster.json"
#: The port of a session kernel's ssh server, on its session network only (never published;
#: the kernel's user cannot bind below 1024 and the agent gives it no capability).
SSH_PORT = 2200
#: A kernel's bootstrap script, in its work dir.
BOOTSTRAP_NAME = ".kernlet-bootstrap.sh"

#: Environment variable: seconds the runtime waits for its ipykernel to start (a decimal
#: string). The agent sets it to ``agent.create-timeout``, so that the runtime's window is the
#: agent's and never a shorter hidden one.
START_TIMEOUT_ENV = "KERNLET_START_TIMEOUT"
#: What the runtime waits when the variable is absent (an agent older than the variable).
DEFAULT_START_TIMEOUT = 60.0
#: The configuration key that the variable's value comes from, named in errors.
CREATE_TIMEOUT_KEY = "agent.create-timeout"


def describe_start(starting: Mapping[str, object]) -> str:
    """The runtime's readiness probe in words, from its status' ``starting`` (what
    kernlet.kernel.probe counts): the runtime's log and errors and the agent's say it alike."""
    get = starting.get
    return (
        f"{get('seconds')} s: {get('sent')} kernel_info sent, {get('answered')} answered; "
        f"{get('iopub')} iopub messages, {get('iopub_ours')} for kernel_info; "
        f"{get('reconnects')} reconnects"
    )
