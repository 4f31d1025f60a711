"""A kernel's life as an ordered list of named hooks, declared here, read top to bottom.

Creation runs each hook's ``up`` in this order; teardown runs the ``down`` of every hook that
started, in reverse; a restart undoes and redoes the hooks from ``RESTART_FROM`` on. The
interpreter is :class:`kernlet.actors.life.Life`. Adding a step to every kernel (mounts,
devices, a session network) is one hook module and one line here.

========== ===================== ================================= ==========================
hook       up                    recorded (durable before the next) down (idempotent)
========== ===================== ================================= ==========================
image      inspect the image     -                                 -
pull       pull if missing,      kernel_pulling (before, if it     -
           check its labels      pulls)
allocate   slots, cores, ports   - (carried by kernel_creating)    release them
dirs       scratch + ipc dirs    kernel_creating                   unmount the scratch,
           (scratch maybe a                                        remove both dirs
           tmpfs or loop image)
mounts     pin storage mounts    - (config of kernel_preparing)    detach, rmdir the points
facts      config dir with       - (written from the log's state)  remove the config dir
           kernel.json
network    hold the session's    - (its facts are in               let go (the last holder
           network, ssh keys,    kernel_preparing)                 removes the network)
           cluster.json
container  docker create         container_created                 stop, keep its output,
                                                                   remove all its
                                                                   containers (exit code)
runtime    docker start, wait    kernel_started                    close the runtime channel
           for the runtime
========== ===================== ================================= ==========================
"""

from __future__ import annotations

from kernlet.actors.hooks.allocate import AllocateHook
from kernlet.actors.hooks.base import Hook, HookEnv
from kernlet.actors.hooks.container import ContainerHook
from kernlet.actors.hooks.dirs import DirsHook, creating_from_state
from kernlet.actors.hooks.facts import FactsHook
from kernlet.actors.hooks.image import ImageHook, PullHook
from kernlet.actors.hooks.mounts import MountsHook
from kernlet.actors.hooks.network import NetworkHook
from kernlet.actors.hooks.runtime import RuntimeHook

__all__ = ["CREATE", "RESTART_FROM", "Hook", "HookEnv", "creating_from_state", "hooks_from"]

#: the kernel's creation, in order; teardown is the reverse
CREATE: tuple[Hook, ...] = (
    ImageHook(),
    PullHook(),
    AllocateHook(),
    DirsHook(),
    MountsHook(),
    FactsHook(),
    NetworkHook(),
    ContainerHook(),
    RuntimeHook(),
)

#: a restart keeps the allocation and the dirs: it undoes and redoes the hooks from here on
RESTART_FROM = "container"


def hooks_from(name: str) -> tuple[Hook, ...]:
    names = [h.name for h in CREATE]
    return CREATE[names.index(name):]
