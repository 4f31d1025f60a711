"""The manager protocol's create requests: a kernel's config, storage mounts, the cluster of a
session and its networks (re-exported by :mod:`kernlet.protocol`; docs/protocol.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator

from kernlet.protocol_base import KernelId
from kernlet.protocol_base import Request as _Request

__all__ = ["ClusterSpec", "CreateKernels", "CreateLocalNetwork", "DestroyLocalNetwork",
           "KernelConfig", "Mount"]

SlotName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$",
                                            max_length=64)]


class Mount(_Request):
    """One storage mount: a directory under a storage root (``[storage] roots``), bound into
    the kernel. Checked against the roots by :mod:`kernlet.drivers.storage`."""

    #: ``"root:relative/path"`` (``"root:"`` or ``"root:."`` is the root itself)
    source: Annotated[str, StringConstraints(min_length=2, max_length=4096)]
    #: where it appears: a path under /home/work (not /home/work itself)
    target: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    mode: Literal["ro", "rw"] = "rw"


class KernelConfig(_Request):
    """How to create one kernel."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    #: CPU cores (fractions allowed); None = agent default
    cpu: Annotated[float, Field(gt=0, le=1024)] | None = None
    #: memory limit in bytes; None = agent default
    mem: Annotated[int, Field(ge=16 * 1024**2)] | None = None
    #: other resource slots (e.g. {"cuda.device": 1}), all or nothing with cpu and mem;
    #: amounts as numbers or decimal strings. Slot names, amounts and this node's capacity
    #: are checked before anything is created (InvalidRequest / InsufficientResource)
    slots: Annotated[dict[SlotName, int | float | str], Field(max_length=32)] = Field(
        default_factory=dict)
    #: bytes of /dev/shm, at most ``mem``; None = ``container.shm-size``
    shm_size: Annotated[int, Field(ge=1024**2)] | None = None
    environ: dict[str, str] = Field(default_factory=dict)
    #: shell script run once in /home/work before the runtime starts
    bootstrap: Annotated[str, StringConstraints(max_length=64 * 1024)] = ""
    #: storage mounts (see :class:`Mount`)
    mounts: Annotated[list[Mount], Field(max_length=64)] = Field(default_factory=list)

    #: container ports to publish now for servers the user starts later (host ports from
    #: the port pool, all or nothing with the service ports; in the create result)
    preopen_ports: Annotated[list[Annotated[int, Field(ge=1, le=65535)]],
                             Field(max_length=16)] = Field(default_factory=list)

    @field_validator("slots")
    @classmethod
    def _not_cpu_or_mem(cls, v: dict[str, Any]) -> dict[str, Any]:
        both = sorted({"cpu", "mem"} & set(v))
        if both:
            raise ValueError(f"{', '.join(both)}: set by the fields of that name, not in slots")
        return v


HostName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
NetworkName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]


class ClusterSpec(_Request):
    """The kernels of one create_kernels call as one session on a network of its own
    (docs/sessions.md). Lists are in ``kernel_ids`` order."""

    #: "single-node": a bridge network on this agent; "multi-node" is designed (Docker overlay
    #: networks, docs/sessions.md) and refused by this agent
    mode: Literal["single-node", "multi-node"] = "single-node"
    #: each kernel's role; default: the first "main", the others "sub"
    roles: list[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]{0,15}$")]] | None = None
    #: each kernel's hostname; default: role + index within the role (main1, sub1, sub2...)
    hostnames: list[HostName] | None = None
    #: give the session an ssh keypair and run an ssh server in each kernel
    ssh: bool = True
    #: attach to this network made by create_local_network (the manager owns it); "": the
    #: agent makes one for the session and removes it after its last kernel
    network: NetworkName | Literal[""] = ""


class CreateKernels(_Request):
    session_id: KernelId
    kernel_ids: Annotated[list[KernelId], Field(min_length=1, max_length=64)]
    configs: Annotated[list[KernelConfig], Field(min_length=1, max_length=64)]
    #: make the kernels one session on its own network (None: each on the default bridge)
    cluster: ClusterSpec | None = None


class CreateLocalNetwork(_Request):
    """Make a bridge network that the manager owns (kernels join it by ``cluster.network``;
    it stays until destroy_local_network)."""

    network: NetworkName


class DestroyLocalNetwork(_Request):
    network: NetworkName
