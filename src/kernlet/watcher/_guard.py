"""Who may run the watcher's operations: the origin rule and the token rule, as pure functions.

The app applies both to every request that may change something (any method but GET and HEAD):
first the origin, then, in each operation, the token. Each refusal carries the ``reason`` it is
counted under in ``kernlet_watcher_auth_failures_total``.

- **Origin.** A browser names the page that sent a request in ``Origin`` (and, for fetches,
  ``Sec-Fetch-Site``). When ``Origin`` is present it must be the watcher's own origin (the
  scheme and the ``Host`` the request was addressed to) or one of ``watcher.allowed-origins``;
  without ``Origin``, a ``Sec-Fetch-Site`` of ``cross-site`` or ``same-site`` is refused. A
  request with neither (curl, the CLI, a script) passes to the token rule. The watcher never
  sends CORS headers, so a browser never lets another site's script read an answer.
- **Token.** Compared with :func:`hmac.compare_digest` on UTF-8 bytes (a header that is not
  UTF-8 keeps its raw bytes, and is simply wrong).
"""

from __future__ import annotations

import hmac
from collections.abc import Collection
from dataclasses import dataclass

from kernlet.config import parse_origin

__all__ = [
    "NO_TOKEN_MESSAGE",
    "REASONS",
    "SAFE_METHODS",
    "TOKEN_HEADER",
    "Refusal",
    "check_token",
    "origin_refusal",
    "own_origin",
    "token_refusal",
]

TOKEN_HEADER = "X-Kernlet-Token"  # noqa: S105 - a header name, not a secret
NO_TOKEN_MESSAGE = (
    "operations are disabled: no token is configured; set `token` in the [watcher] section of "
    f"agent.toml and send it in the {TOKEN_HEADER} header"
)
#: methods that change nothing: the origin rule leaves them alone
SAFE_METHODS = frozenset({"GET", "HEAD"})
#: why a request was refused: the ``reason`` label of kernlet_watcher_auth_failures_total
REASONS = ("bad-token", "cross-origin", "missing-token", "no-token-configured")
#: Sec-Fetch-Site values that name another origin than the watcher's
_FOREIGN_SITES = frozenset({"cross-site", "same-site"})


@dataclass(frozen=True)
class Refusal:
    """An HTTP refusal: its status (401 or 403), its counted reason and its message."""

    status: int
    reason: str
    message: str


def _utf8(text: str) -> bytes:
    # aiohttp decodes header bytes that are not UTF-8 as surrogates; this gives them back
    return text.encode("utf-8", "surrogateescape")


def token_refusal(configured: str | None, presented: str | None) -> Refusal | None:
    """None when the token is right; else the refusal (the comparison takes constant time)."""
    if not configured:
        return Refusal(403, "no-token-configured", NO_TOKEN_MESSAGE)
    if not presented:
        return Refusal(401, "missing-token", f"this operation needs the {TOKEN_HEADER} header")
    if not hmac.compare_digest(_utf8(presented), _utf8(configured)):
        return Refusal(403, "bad-token", f"wrong {TOKEN_HEADER}")
    return None


def check_token(configured: str | None, presented: str | None) -> tuple[int, str] | None:
    """None when an operation may go ahead; else the (status, message) to refuse it with."""
    refusal = token_refusal(configured, presented)
    return None if refusal is None else (refusal.status, refusal.message)


def own_origin(scheme: str, host: str) -> str | None:
    """The canonical origin a request was addressed to (``Host``); None when it is not one."""
    try:
        return parse_origin(f"{scheme}://{host}")
    except ValueError:
        return None


def origin_refusal(
    origin: str | None, fetch_site: str | None, own: str | None, allowed: Collection[str]
) -> Refusal | None:
    """None when a request that may change something comes from the watcher's own origin, an
    allowed one, or no browser page at all; else the 403. ``allowed`` holds canonical origins
    (:func:`kernlet.config.parse_origin`)."""
    if origin is None:
        site = (fetch_site or "").strip().lower()
        if site in _FOREIGN_SITES:
            return Refusal(403, "cross-origin",
                           f"cross-origin request refused (Sec-Fetch-Site: {site}); operations "
                           "are only accepted from the watcher's own pages")
        return None
    try:
        canonical: str | None = parse_origin(origin)
    except ValueError:
        canonical = None
    if canonical is not None and (canonical == own or canonical in allowed):
        return None
    return Refusal(403, "cross-origin",
                   f"cross-origin request refused: Origin {origin[:200]!r} is neither the "
                   "watcher's own origin nor in watcher.allowed-origins")
