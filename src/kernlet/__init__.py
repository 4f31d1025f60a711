"""kernlet: a compute-node agent that runs users' code in kernel containers.

This module stays free of imports: the package directory is mounted read-only into kernel
containers, where only the standard library and msgpack exist, and the in-container runtime
imports ``kernlet.kernel``, ``kernlet.layout`` and ``kernlet.events.codec`` from it.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
