"""The in-container runtime: serves the agent on a unix socket and runs users' code.

Runs INSIDE kernel containers, where only Debian's python3 with ipykernel, jupyter_client
(7.4 there, 8.x on the host), msgpack and matplotlib exist. So this package imports only the
standard library, jupyter_client (and what it brings: pyzmq's asyncio sockets through the
client's channels), msgpack, :mod:`kernlet.events.codec` and :mod:`kernlet.layout` (the names
shared with the agent, e.g. ``KERNLET_START_TIMEOUT``). Nothing here imports at package
import time: ``python3 -m kernlet.kernel`` loads the modules it needs.

Layout: ``outbox`` (buffered, coalesced, bounded output with sequence numbers), ``server``
(socket, framing, op routing, the run queue), ``query`` (Python code on an ipykernel) with
``jupyter`` (its process and channels) and ``translate`` (its messages into run messages),
``batch`` (clean/build/exec shell commands). See docs/runtime.md for the protocol.
"""
