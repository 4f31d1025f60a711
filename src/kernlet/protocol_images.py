"""The manager protocol's image requests: pull, commit, push, purge, list (re-exported by
:mod:`kernlet.protocol`; docs/protocol.md, docs/images.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from kernlet.protocol_base import KernelId
from kernlet.protocol_base import Request as _Request

__all__ = ["CheckAndPull", "CommitKernel", "GetCommitStatus", "ListImages", "PurgeImages",
           "PushImage"]

class CheckAndPull(_Request):
    image: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    #: seconds the pull may take (the reference's default: 2 hours)
    timeout: Annotated[float, Field(gt=0, le=24 * 3600)] = 7200.0


#: a repository name: ``[host[:port]/]path`` in lower case (Docker's rule)
Repository = Annotated[str, StringConstraints(
    pattern=r"^[a-z0-9][a-z0-9._-]*(:[0-9]{1,5})?(/[a-z0-9][a-z0-9._-]*)+$|^[a-z0-9][a-z0-9._-]*$",
    max_length=200)]
Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]
#: an image name: repository, ``repository:tag`` or an image id
ImageName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,255}$")]


class CommitKernel(_Request):
    """Commit the running kernel's container to the new image ``image:tag`` (background;
    image_commit_started / image_commit_finished)."""

    kernel_id: KernelId
    image: Repository
    tag: Tag = "latest"


class GetCommitStatus(_Request):
    """A commit's status by its id, or the latest commit of ``kernel_id``."""

    commit_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] | None = None
    kernel_id: KernelId | None = None


class PushImage(_Request):
    """Push a local image to ``registry`` (``host:port``; default: the one its name names)
    with the credentials of ``[registries]`` (background; image_push_progress, image_pushed)."""

    image: ImageName
    registry: Annotated[str, StringConstraints(
        pattern=r"^([A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?)?$", max_length=255)] = ""


class PurgeImages(_Request):
    """Remove local images no live kernel uses (``force``: also those only stopped
    containers use; never one a live kernel runs)."""

    images: Annotated[list[ImageName], Field(min_length=1, max_length=256)]
    force: bool = False


class ListImages(_Request):
    """The node's kernel images: id, tags, repo digests, size, labels (a fresh rescan)."""
