"""Names shared by the agent and the in-container runtime: the container's contract.

Both sides import this module: the agent (``kernlet.actors.steps`` builds the container's
environment from it) and the runtime inside the container (``kernlet.kernel``), where only the
standard library exists. So it holds plain constants and imports nothing.
"""

from __future__ import annotations

__all__ = ["CREATE_TIMEOUT_KEY", "DEFAULT_START_TIMEOUT", "START_TIMEOUT_ENV"]

#: Environment variable: seconds the runtime waits for its ipykernel to start (a decimal
#: string). The agent sets it to ``agent.create-timeout``, so that the runtime's window is the
#: agent's and never a shorter hidden one.
START_TIMEOUT_ENV = "KERNLET_START_TIMEOUT"
#: What the runtime waits when the variable is absent (an agent older than the variable).
DEFAULT_START_TIMEOUT = 60.0
#: The configuration key that the variable's value comes from, named in errors.
CREATE_TIMEOUT_KEY = "agent.create-timeout"
