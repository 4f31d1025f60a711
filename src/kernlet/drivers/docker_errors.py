"""The one place where aiodocker's errors become kernlet's (re-exported by
:mod:`kernlet.drivers.docker`; used by the container, image and stats drivers)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import aiodocker
import aiohttp

from kernlet.errors import ContainerNotFound, DockerError, KernletError, RegistryAuthFailed

__all__ = ["registry_error", "translated"]

#: what Docker says when a registry refuses or wants credentials (push, pull, manifest HEAD)
_AUTH = re.compile(r"unauthori[sz]ed|authentication required|no basic auth credentials"
                   r"|denied: requested access", re.IGNORECASE)


def registry_error(message: str) -> DockerError:
    """A registry's refusal as the typed error: RegistryAuthFailed for credentials."""
    return RegistryAuthFailed(message) if _AUTH.search(message) else DockerError(message)


@contextlib.contextmanager
def translated(what: str, not_found: type[KernletError] = ContainerNotFound) -> Iterator[None]:
    """Translate aiodocker's errors for the call described by ``what``.

    A 404 becomes ``not_found``, the kind of object the caller asked about (ContainerNotFound,
    or ImageNotFound for an image, or for a create whose image is missing); a registry's
    refusal of credentials RegistryAuthFailed; any other refusal, and an engine that cannot be
    reached or does not answer in time, DockerError.
    """
    try:
        yield
    except aiodocker.DockerError as exc:
        message = f"{what}: {exc.message}"
        if exc.status == 404 and not _AUTH.search(message):
            raise not_found(message) from exc
        raise registry_error(message) from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise DockerError(f"{what}: Docker Engine unreachable: {exc}") from exc
