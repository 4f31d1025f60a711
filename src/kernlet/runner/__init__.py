"""What kernlet runs inside kernel containers: the entrypoint, and the in-container services.

This package is mounted read-only into every container (``/opt/kernlet/lib/kernlet/runner``).
:mod:`kernlet.runner.services` is for the agent too (standard library only);
:mod:`kernlet.runner.terminal` runs only inside containers (it needs tornado and terminado).
"""
