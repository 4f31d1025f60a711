"""Hooks ``image`` and ``pull``: the kernel's image is here, pulled if need be, and is a
kernlet kernel image (its kernelspec label; its declared service ports parsed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kernlet.actors import steps
from kernlet.actors.hooks.base import BaseHook, HookEnv
from kernlet.drivers.docker import ImageInfo
from kernlet.errors import ImageNotFound, InvalidRequest
from kernlet.events import EventBody, KernelPulling
from kernlet.images import KERNELSPEC_LABEL, SERVICE_PORTS_LABEL
from kernlet.runner.services import ServicePort, parse_service_ports

__all__ = ["ImageFacts", "ImageHook", "PullHook", "check_image"]


@dataclass(frozen=True, slots=True)
class ImageFacts:
    info: ImageInfo
    service_ports: tuple[ServicePort, ...]


class ImageHook(BaseHook):
    """Inspect the image. Its fact: the ImageInfo, or None when it is missing and may be
    pulled (auto-pull on, a name with a registry host); else ImageNotFound."""

    name = "image"

    async def up(self, env: HookEnv) -> ImageInfo | None:
        try:
            return await env.ctx.docker.image(env.state.image)
        except ImageNotFound:
            if env.ctx.cfg.container.auto_pull and steps.names_registry(env.state.image):
                return None
            raise


class PullHook(BaseHook):
    """Pull the image if ``image`` found it missing (``kernel_pulling`` first), then check
    that it is a kernel image. Its fact: :class:`ImageFacts`."""

    name = "pull"

    def before(self, env: HookEnv) -> EventBody | None:
        return KernelPulling(image=env.state.image) if env.facts["image"] is None else None

    async def up(self, env: HookEnv) -> ImageFacts:
        info: ImageInfo | None = env.facts["image"]
        if info is None:
            cfg = env.ctx.cfg.container
            info = await steps.pull_image(env.ctx.docker, env.state.image, cfg.pull_timeout,
                                          key="container.pull-timeout",
                                          registries=env.ctx.cfg.registries)
        return check_image(env.state.image, info)


def check_image(image: str, info: Any) -> ImageFacts:
    if KERNELSPEC_LABEL not in info.labels:
        raise InvalidRequest(f"image {image} is not a kernlet kernel image "
                             f"(no {KERNELSPEC_LABEL} label)")
    try:
        ports = parse_service_ports(info.labels.get(SERVICE_PORTS_LABEL, ""))
    except ValueError as exc:
        raise InvalidRequest(f"image {image}: {exc}") from exc
    return ImageFacts(info, tuple(ports))
