"""The Docker driver's image operations over aiodocker: inspect, pull, list, commit, push,
tag, remove and the inventory (mixed into :class:`~kernlet.drivers.docker.DockerDriver`).

Credentials are given per call (:class:`~kernlet.drivers.image_ops.RegistryAuth`) and passed
to Docker as the X-Registry-Auth header of that one request; nothing keeps them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiodocker

from kernlet.drivers.container_runtime import ImageInfo, PullProgress
from kernlet.drivers.docker_errors import registry_error, translated
from kernlet.drivers.image_ops import ImageRecord, RegistryAuth
from kernlet.errors import DockerError, ImageInUse, ImageNotFound

__all__ = ["DockerImages", "split_ref"]


def split_ref(ref: str) -> tuple[str, str]:
    """``host:port/repo:tag`` -> (``host:port/repo``, ``tag``); the tag "latest" if none."""
    head, sep, tail = ref.rpartition(":")
    if sep and "/" not in tail:
        return head, tail
    return ref, "latest"


def _progress(layers: dict[str, tuple[int, int]], item: dict[str, Any]) -> PullProgress:
    """Sum the layers' current/total bytes as Docker reports them (pull and push alike)."""
    detail = item.get("progressDetail") or {}
    layer = str(item.get("id", ""))
    if layer and detail.get("total"):
        layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
    return PullProgress(status=str(item.get("status", "")),
                        current=sum(c for c, _ in layers.values()),
                        total=sum(t for _, t in layers.values()))


def _key(env_entry: str) -> str:
    return env_entry.split("=", 1)[0]


def commit_config(base: dict[str, Any], container: dict[str, Any],
                  labels: dict[str, str]) -> dict[str, Any]:
    """The config of a committed image: the base image's, plus ``labels``.

    Docker fills what a commit's config leaves unset from the container's own config, and
    appends the container's environment variables and labels that it does not name: so each
    of those is named here, blank, to keep the kernel's environment (its ids, the user's
    variables) and the agent's container labels out of the image."""
    env = list(base.get("Env") or [])
    known = {_key(e) for e in env}
    env += [f"{k}=" for k in dict.fromkeys(_key(e) for e in container.get("Env") or [])
            if k not in known]
    out_labels = {**(base.get("Labels") or {}), **labels}
    for key in container.get("Labels") or {}:
        out_labels.setdefault(key, "")
    return {
        "Env": env,
        "Cmd": base.get("Cmd") or [],
        "Entrypoint": base.get("Entrypoint") or [],
        "WorkingDir": base.get("WorkingDir") or "/",
        "User": base.get("User") or "",
        "Labels": out_labels,
        "ExposedPorts": base.get("ExposedPorts") or {},
        "StopSignal": base.get("StopSignal") or "SIGTERM",
    }


class DockerImages:
    """Image operations; the class using it provides ``_d`` (the aiodocker client)."""

    @property
    def _d(self) -> aiodocker.Docker:
        raise NotImplementedError

    async def image(self, name: str) -> ImageInfo:
        with translated(f"inspect image {name}", ImageNotFound):
            raw = await self._d.images.inspect(name)
        cfg = raw.get("Config") or {}
        return ImageInfo(
            id=raw["Id"],
            tags=tuple(raw.get("RepoTags") or ()),
            labels=dict(cfg.get("Labels") or {}),
        )

    async def pull(
        self, name: str, on_progress: Callable[[PullProgress], None] | None = None,
        auth: RegistryAuth | None = None,
    ) -> ImageInfo:
        """Pull an image (name with tag), reporting progress; the pulled image.

        Progress sums the layers' current/total bytes as Docker reports them. A registry
        error mid-stream (Docker sends it as a progress item) raises DockerError, or
        RegistryAuthFailed for refused credentials.
        """
        layers: dict[str, tuple[int, int]] = {}
        with translated(f"pull {name}", DockerError):
            async for item in self._d.images.pull(
                name, stream=True, timeout=None, auth=auth.header() if auth else None,
            ):
                if "error" in item:
                    raise registry_error(f"pull {name}: {item.get('error')}")
                if on_progress is not None:
                    on_progress(_progress(layers, item))
                else:
                    _progress(layers, item)
        return await self.image(name)

    async def images(self, label: str) -> list[ImageInfo]:
        with translated("list images"):
            raws = await self._d.images.list(filters={"label": [label]})
        return [
            ImageInfo(id=r["Id"], tags=tuple(r.get("RepoTags") or ()), labels=r.get("Labels") or {})
            for r in raws
        ]

    async def inventory(self, label: str) -> list[ImageRecord]:
        with translated("list images"):
            raws = await self._d.images.list(filters={"label": [label]})
        return sorted((
            ImageRecord(
                id=str(r["Id"]),
                tags=tuple(t for t in r.get("RepoTags") or () if t != "<none>:<none>"),
                digests=tuple(d for d in r.get("RepoDigests") or () if d != "<none>@<none>"),
                size=int(r.get("Size") or 0),
                labels=dict(r.get("Labels") or {}),
            ) for r in raws), key=lambda rec: rec.id)

    async def commit(
        self, container_id: str, ref: str, *, base_image: str, labels: dict[str, str],
        message: str = "",
    ) -> ImageInfo:
        repo, tag = split_ref(ref)
        with translated(f"inspect image {base_image}", ImageNotFound):
            base = (await self._d.images.inspect(base_image)).get("Config") or {}
        container = self._d.containers.container(container_id)
        with translated(f"inspect container {container_id[:12]}"):
            own = (await container.show()).get("Config") or {}
        with translated(f"commit {container_id[:12]} as {ref}"):
            await container.commit(repository=repo, tag=tag, message=message or None,
                                   config=commit_config(base, own, labels), pause=True,
                                   timeout=None)
        return await self.image(ref)

    async def push(
        self, ref: str, on_progress: Callable[[PullProgress], None] | None = None,
        auth: RegistryAuth | None = None,
    ) -> str:
        repo, tag = split_ref(ref)
        await self.image(ref)  # ImageNotFound before talking to the registry
        layers: dict[str, tuple[int, int]] = {}
        digest = ""
        with translated(f"push {ref}", DockerError):
            async for item in self._d.images.push(
                repo, tag=tag, stream=True, timeout=None, auth=auth.header() if auth else None,
            ):
                if "error" in item:
                    raise registry_error(f"push {ref}: {item.get('error')}")
                aux = item.get("aux") or {}
                digest = str(aux.get("Digest") or digest)
                progress = _progress(layers, item)
                if on_progress is not None:
                    on_progress(progress)
        return digest

    async def tag(self, source: str, ref: str) -> None:
        repo, tag = split_ref(ref)
        with translated(f"tag {source} as {ref}", ImageNotFound):
            await self._d.images.tag(source, repo, tag=tag)

    async def remove_image(self, ref: str, force: bool = False) -> list[str]:
        try:
            with translated(f"remove image {ref}", ImageNotFound):
                done = await self._d.images.delete(ref, force=force)
        except DockerError as exc:
            cause = exc.__cause__
            if isinstance(cause, aiodocker.DockerError) and cause.status == 409:
                raise ImageInUse(exc.message) from exc
            raise
        return [str(v) for item in done for v in item.values()]
