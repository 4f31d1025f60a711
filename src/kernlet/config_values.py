"""Values of the agent configuration that are parsed from strings: sizes, web origins and cpu
limits (re-exported by :mod:`kernlet.config`)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["cpu_limit_factor", "parse_origin", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_FACTOR = re.compile(r"^(\d+(?:\.\d+)?)x$")


def parse_size(value: int | str) -> int:
    """Bytes from an int or a size string such as ``512m``, ``1.5GiB`` or ``1024``."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if m is None:
        raise ValueError(f"not a size: {value!r} (use e.g. 256m, 1g)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_origin(value: str) -> str:
    """A web origin in canonical form, ``scheme://host:port`` (lower case, port always given):
    ``HTTPS://Ops.Example`` is ``https://ops.example:443``. Only http and https origins, with
    no user, path, query or fragment; ``ValueError`` otherwise (``null`` included)."""
    try:
        u = urlsplit(value.strip())
        port = u.port
    except ValueError as exc:
        raise ValueError(f"not an origin: {value!r} ({exc})") from None
    scheme = u.scheme.lower()
    if scheme not in ("http", "https") or not u.hostname or u.username is not None \
            or u.password is not None or u.path not in ("", "/") or u.query or u.fragment \
            or "#" in value or "?" in value:
        raise ValueError(f"not an origin: {value!r} (use scheme://host[:port], e.g. "
                         "https://ops.example.com)")
    host = u.hostname  # lower case, without the brackets of an IPv6 address
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port if port is not None else _DEFAULT_PORT[scheme]}"


_DEFAULT_PORT = {"http": 80, "https": 443}


def cpu_limit_factor(value: str) -> float | None:
    """``none`` -> None, ``request`` -> 1.0, ``4x`` -> 4.0; ValueError for anything else,
    a factor under 1 included (it would take back part of the guarantee)."""
    if value == "none":
        return None
    if value == "request":
        return 1.0
    m = _FACTOR.match(value)
    if m is None or float(m.group(1)) < 1:
        raise ValueError(f"not a cpu limit: {value!r} (use none, request, or a factor of "
                         "at least 1 such as 4x)")
    return float(m.group(1))
