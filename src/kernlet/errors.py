"""Errors that cross kernlet's boundaries: drivers raise them, the agent replies with them.

Every error travels to the manager as ``{"type": <class name>, "message": <text>}``; the client
library turns it back into the same class. Hierarchy::

    KernletError                 base of every kernlet error
    ├── InvalidRequest           malformed, wrong types, oversized or unknown-field request
    │   └── InvalidMount         a kernel's storage mount is refused (names the mount)
    ├── UnknownCommand           no such command on the agent
    ├── KernelNotFound           no live kernel with that id on this agent
    ├── KernelAlreadyExists      a create for a kernel id this agent already has
    ├── KernelNotRunning         the kernel cannot take this call in its current state
    ├── ImageNotFound            the image is not present on this node
    ├── ImageInUse               a live kernel runs the image (purge_images refuses it)
    ├── InsufficientResource     the request does not fit what is free
    ├── CreationFailed           the kernel could not be created (everything was rolled back)
    ├── AgentTimeout             the agent did not finish in time
    ├── AgentUnavailable         no agent answered (client side)
    ├── InternalError            a bug or an unexpected failure inside the agent
    └── DriverError              an outside service failed
        ├── DockerError          Docker Engine refused or failed
        │   └── RegistryAuthFailed   the registry refused the credentials (or wants some)
        ├── ContainerNotFound    the container is gone
        ├── BusError             NATS failed
        ├── EtcdError            etcd refused, failed or could not be reached
        ├── StatsStoreError      Redis refused, failed or could not be reached
        └── RuntimeUnavailable   the in-container runtime does not answer
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentTimeout",
    "AgentUnavailable",
    "BusError",
    "ContainerNotFound",
    "CreationFailed",
    "DockerError",
    "DriverError",
    "EtcdError",
    "ImageInUse",
    "ImageNotFound",
    "InsufficientResource",
    "InternalError",
    "InvalidMount",
    "InvalidRequest",
    "KernelAlreadyExists",
    "KernelNotFound",
    "KernelNotRunning",
    "KernletError",
    "RegistryAuthFailed",
    "RuntimeUnavailable",
    "StatsStoreError",
    "UnknownCommand",
    "error_from_wire",
]


class KernletError(Exception):
    """Base of every kernlet error; carries a message meant for the caller."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_wire(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message}


class InvalidRequest(KernletError):
    """The request is malformed, has wrong types, unknown fields or is too large."""


class InvalidMount(InvalidRequest):
    """A storage mount is refused (unknown root, outside it, missing, bad target): the
    message names the mount (``configs[0].mounts[1].source``)."""


class UnknownCommand(KernletError):
    """The agent has no such command."""


class KernelNotFound(KernletError):
    """No live kernel with that id on this agent."""


class KernelAlreadyExists(KernletError):
    """A create for a kernel id that this agent already has."""


class KernelNotRunning(KernletError):
    """The kernel cannot take this call in its current state (e.g. terminated)."""


class ImageNotFound(KernletError):
    """The image is not present on this node."""


class ImageInUse(KernletError):
    """The image is used by a kernel (a live kernel runs it: never removed)."""


class InsufficientResource(KernletError):
    """The request does not fit the free resources."""


class CreationFailed(KernletError):
    """The kernel could not be created; everything it held was released."""


class AgentTimeout(KernletError):
    """The agent did not finish the call in time."""


class AgentUnavailable(KernletError):
    """No agent answered on that subject."""


class InternalError(KernletError):
    """An unexpected failure inside the agent; it kept running."""


class DriverError(KernletError):
    """An outside service failed."""


class DockerError(DriverError):
    """Docker Engine refused or failed a call."""


class RegistryAuthFailed(DockerError):
    """The registry refused the credentials configured for it, or asked for some and none
    are configured (``[registries."host:port"]``). The message never contains a secret."""


class ContainerNotFound(DriverError):
    """The container does not exist (any more)."""


class BusError(DriverError):
    """NATS failed."""


class EtcdError(DriverError):
    """etcd refused, failed or could not be reached."""


class StatsStoreError(DriverError):
    """Redis refused, failed or could not be reached."""


class RuntimeUnavailable(DriverError):
    """The in-container runtime does not answer."""


def _all_errors() -> dict[str, type[KernletError]]:
    found: dict[str, type[KernletError]] = {}
    todo: list[type[KernletError]] = [KernletError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def error_from_wire(data: Any) -> KernletError:
    """Rebuild the typed error from a ``{type, message}`` reply."""
    if not isinstance(data, dict):
        return InternalError(f"malformed error reply: {data!r}")
    cls = _all_errors().get(str(data.get("type")), KernletError)
    return cls(str(data.get("message", "")))
