"""What kernlet asks of the engine's image store beyond pull: commit, push, tag, remove and
the inventory, with the plain data that crosses that boundary.

:class:`ImageOps` is part of :class:`~kernlet.drivers.container_runtime.ContainerRuntime`;
the Docker implementation is :class:`~kernlet.drivers.docker_images.DockerImages`, the fake's
is in :mod:`kernlet.drivers.fake_runtime`.

Registry credentials travel as a :class:`RegistryAuth`, one per call: they are never kept by
the driver, and their ``repr`` shows no secret (so a log line or an error that prints one
leaks nothing).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # (container_runtime imports this module: ImageOps is part of it)
    from kernlet.drivers.container_runtime import ImageInfo, PullProgress

__all__ = ["ImageOps", "ImageRecord", "RegistryAuth", "registry_of"]


def registry_of(image: str) -> str:
    """The registry host[:port] an image name starts with, or "" (Docker Hub's short names)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return ""


@dataclass(frozen=True, slots=True)
class RegistryAuth:
    """Credentials for one registry, for one call (Docker's X-Registry-Auth)."""

    #: host[:port] of the registry
    server: str
    username: str = ""
    password: str = field(default="", repr=False)
    #: an identity (refresh) token instead of a password, as ``docker login`` stores one
    identity_token: str = field(default="", repr=False)

    def header(self) -> dict[str, Any]:
        """The JSON object Docker expects, base64-encoded by the client library."""
        if self.identity_token:
            return {"identitytoken": self.identity_token, "serveraddress": self.server}
        return {"username": self.username, "password": self.password,
                "serveraddress": self.server}


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One local image as the inventory reports it."""

    id: str
    tags: tuple[str, ...]
    #: ``repo@sha256:...`` for each registry the image was pushed to or pulled from
    digests: tuple[str, ...]
    #: bytes
    size: int
    labels: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tags": list(self.tags), "digests": list(self.digests),
                "size": self.size, "labels": dict(self.labels)}


class ImageOps(Protocol):
    """Image operations of a container engine; each runs on the agent's loop."""

    async def commit(
        self, container_id: str, ref: str, *, base_image: str, labels: dict[str, str],
        message: str = "",
    ) -> ImageInfo:
        """The container's filesystem (not its mounts) as the new image ``ref``
        (``repo:tag``), with ``base_image``'s config (command, environment, working dir,
        user) and its labels plus ``labels``; nothing of the container's own environment
        or labels. ContainerNotFound; DockerError."""
        ...

    async def push(
        self, ref: str, on_progress: Callable[[PullProgress], None] | None = None,
        auth: RegistryAuth | None = None,
    ) -> str:
        """Push ``ref`` (``host[:port]/repo:tag``) to its registry; the pushed digest.
        ImageNotFound; RegistryAuthFailed; DockerError."""
        ...

    async def tag(self, source: str, ref: str) -> None:
        """Give the local image ``source`` the name ``ref`` too. ImageNotFound."""
        ...

    async def remove_image(self, ref: str, force: bool = False) -> builtins.list[str]:
        """Remove the name ``ref`` (and the image once no name is left); what Docker
        untagged and deleted. ImageNotFound; ImageInUse when a container uses it and not
        ``force``."""
        ...

    async def inventory(self, label: str) -> builtins.list[ImageRecord]:
        """Local images carrying ``label`` with their digests and sizes."""
        ...
