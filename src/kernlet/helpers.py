"""Helpers for user code inside a kernel: ``import kernlet.helpers`` (or ``from kernlet import
helpers``) in a Python kernel.

This module runs INSIDE kernel containers, where the agent's ``kernlet`` package is mounted
read-only on ``PYTHONPATH``: standard library only. It reads what the agent wrote for the
kernel (``/home/config/kernel.json``, see :mod:`kernlet.layout`) and its environment:

- :func:`facts`: everything in ``kernel.json`` (ids, image, slots, cores, devices, mounts);
  :func:`kernel_id`, :func:`session_id`, :func:`slots`, :func:`devices`, :func:`mounts`,
  :func:`cpu_count` are shortcuts;
- :func:`install`: ``pip install --user`` with the image's own pip into the kernel's user
  site (under /home/work, so it lasts as long as the kernel's scratch), then importable at
  once. An image without pip raises :class:`HelperError` saying so.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import site
import subprocess
import sys
from pathlib import Path
from typing import Any

from kernlet.layout import CONFIG_IN_CONTAINER, FACTS_NAME

__all__ = [
    "HelperError",
    "cpu_count",
    "devices",
    "facts",
    "install",
    "kernel_id",
    "mounts",
    "session_id",
    "slots",
]

#: where the facts are read from (an override for running the helpers outside a kernel)
CONFIG_DIR_ENV = "KERNLET_CONFIG_DIR"


class HelperError(RuntimeError):
    """A helper cannot do what was asked (no facts file, no pip, pip failed)."""


def facts() -> dict[str, Any]:
    """The kernel's facts as the agent recorded them (read afresh on each call)."""
    path = Path(os.environ.get(CONFIG_DIR_ENV, CONFIG_IN_CONTAINER)) / FACTS_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HelperError(f"cannot read the kernel's facts ({path}): {exc}") from exc
    if not isinstance(data, dict):
        raise HelperError(f"{path} does not hold a JSON object")
    return data


def kernel_id() -> str:
    """The kernel's id: from its facts (a kernel taken from the warm pool has the pool
    kernel's id in its environment, docs/pool.md), else the environment."""
    return _fact_or_env("kernel_id", "KERNLET_KERNEL_ID")


def session_id() -> str:
    return _fact_or_env("session_id", "KERNLET_SESSION_ID")


def _fact_or_env(key: str, var: str) -> str:
    try:
        value = facts().get(key)
    except HelperError:
        value = None
    return str(value or os.environ.get(var) or "")


def slots() -> dict[str, str]:
    """Slot name -> allocated amount, as decimal strings (``{"cpu": "1", "mem": "..."}``)."""
    return dict(facts().get("slots") or {})


def devices() -> dict[str, dict[str, str]]:
    """Slot -> device id -> amount, for device slots (e.g. GPUs); {} when none."""
    return dict(facts().get("devices") or {})


def mounts() -> list[dict[str, str]]:
    """The kernel's storage mounts: ``[{"source", "target", "mode"}]``."""
    return list(facts().get("mounts") or [])


def cpu_count() -> int:
    """The cores the kernel was given (``NPROC``), at least 1."""
    try:
        return max(1, int(os.environ.get("NPROC", "")))
    except ValueError:
        return max(1, len(facts().get("cpuset") or ()))


def install(*packages: str, find_links: str | None = None, index_url: str | None = None,
            no_index: bool = False, upgrade: bool = False,
            timeout: float | None = None) -> str:
    """``pip install --user`` the packages with the image's pip; returns pip's output.

    The packages go to the user site (``~/.local`` under /home/work) and are importable at
    once. Raises HelperError when the image has no pip or pip fails (with its last lines)."""
    if not packages:
        raise HelperError("install: name at least one package")
    if importlib.util.find_spec("pip") is None:
        raise HelperError(f"this image has no pip ({sys.executable} -m pip): install pip in "
                          "the image (Debian: python3-pip), or install in a bootstrap script")
    argv = [sys.executable, "-m", "pip", "install", "--user", "--disable-pip-version-check",
            "--no-warn-script-location"]
    if find_links:
        argv += ["--find-links", find_links]
    if index_url:
        argv += ["--index-url", index_url]
    if no_index:
        argv.append("--no-index")
    if upgrade:
        argv.append("--upgrade")
    # Debian marks its Python externally managed; the user site of a kernel is ours to fill
    env = {**os.environ, "PIP_BREAK_SYSTEM_PACKAGES": "1"}
    try:
        done = subprocess.run([*argv, "--", *packages], capture_output=True, text=True,
                              env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HelperError(f"pip install {' '.join(packages)}: not done after {timeout} s") \
            from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
        raise HelperError(f"pip install {' '.join(packages)} failed "
                          f"(exit {done.returncode}):\n{tail}")
    user_site = site.getusersitepackages()
    if user_site not in sys.path:
        site.addsitedir(user_site)
    importlib.invalidate_caches()
    return done.stdout
