"""Installing what is missing from Debian's packages, with apt-get."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from kernlet.halfstack._services import SERVICES, TOOLS, HalfstackError, Service, which


def ensure_installed(
    log_file: Path,
    services: Iterable[Service] = SERVICES,
    tools: dict[str, str] | None = None,
    say: Callable[[str], None] = lambda _msg: None,
) -> list[str]:
    """Install, from Debian's packages, those whose programs are missing. Returns them.

    ``apt-get update`` runs only when a first install attempt fails. Package scripts are kept
    from starting services (policy-rc.d), since ``up`` starts them itself. apt's output goes
    to ``log_file``.
    """
    wanted = dict(TOOLS if tools is None else tools)
    wanted.update({svc.binary: svc.package for svc in services})
    missing = sorted({pkg for binary, pkg in wanted.items() if which(binary) is None})
    if not missing:
        return []
    if which("apt-get") is None:
        raise HalfstackError(f"missing {', '.join(missing)}, and no apt-get to install them")
    say(f"installing {' '.join(missing)} with apt-get (log: {log_file})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log, _no_service_starts():

        def run(argv: list[str]) -> int:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                  env=env, check=False).returncode

        if run(install) != 0:
            say("apt-get install failed; running apt-get update and trying again")
            run(["apt-get", "update"])
            if run(install) != 0:
                raise HalfstackError(f"apt-get install {' '.join(missing)} failed; see {log_file}")
    return missing


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Keep packages' maintainer scripts from starting their services (Debian's policy-rc.d)."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# kernlet halfstack: no starts during install\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)
