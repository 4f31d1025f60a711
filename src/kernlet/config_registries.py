"""``[registries."host:port"]``: credentials for the registries this agent pulls from and
pushes to, and the one function that turns them into a per-call
:class:`~kernlet.drivers.image_ops.RegistryAuth`.

A registry has a username with a password (``password``, or ``password-file`` read at each
call, so that a rotated password applies at once) or a ``token-file`` (an identity token, as
``docker login`` stores one). Secrets are pydantic ``SecretStr``: a config printed, dumped or
logged shows ``**********``. They never go into events or log lines (docs/images.md).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from kernlet.drivers.image_ops import RegistryAuth, registry_of

__all__ = ["RegistrySection", "registry_auth"]


class RegistrySection(BaseModel):
    model_config = ConfigDict(alias_generator=lambda n: n.replace("_", "-"),
                              populate_by_name=True, extra="forbid", frozen=True)

    username: str = ""
    password: SecretStr = SecretStr("")
    #: a file holding the password (read at each pull or push)
    password_file: Path | None = None
    #: a file holding an identity token (instead of a username and password)
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_way(self) -> RegistrySection:
        secret = self.password.get_secret_value()
        if secret and self.password_file is not None:
            raise ValueError("give password or password-file, not both")
        if self.token_file is not None and (self.username or secret or self.password_file):
            raise ValueError("token-file replaces username and password: give one or the other")
        if self.token_file is None and not self.username:
            raise ValueError("username is required (or a token-file)")
        return self


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        # the path is configuration, not a secret; the content is never shown
        raise OSError(f"registry {what} {path}: {exc.strerror or exc}") from None


def registry_auth(registries: dict[str, RegistrySection], image: str) -> RegistryAuth | None:
    """The credentials for ``image``'s registry (host[:port] it starts with), or None when
    that registry is not configured. Raises OSError when a password or token file cannot be
    read (the message names the file, never its content)."""
    server = registry_of(image)
    reg = registries.get(server) if server else None
    if reg is None:
        return None
    if reg.token_file is not None:
        return RegistryAuth(server, identity_token=_read(reg.token_file, "token-file"))
    password = (_read(reg.password_file, "password-file") if reg.password_file is not None
                else reg.password.get_secret_value())
    return RegistryAuth(server, username=reg.username, password=password)
