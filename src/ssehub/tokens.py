"""Where a request's token comes from (header, query, cookie) and how a refusal reads:
401 and 403 with the reason in the body and in ``WWW-Authenticate``."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache

from .errors import HubError, one_line
from .settings import DEFAULTS

COOKIE = DEFAULTS.cookie_name
# Far above any real token, far below what it costs to decode and verify a huge one on every
# request: the standalone server bounds heads anyway, an ASGI server may not.
MAX_TOKEN = 16 * 1024


def _challenge(error: str | None, reason: str) -> tuple[tuple[str, str], ...]:
    value = 'Bearer realm="ssehub"'
    if error is not None:
        quoted = reason.replace("\\", "\\\\").replace('"', "'")
        value += f', error="{error}", error_description="{quoted}"'
    return (("WWW-Authenticate", value),)


def unauthorized(reason: str, error: str | None = "invalid_token") -> HubError:
    """401 with the reason in the body and in ``WWW-Authenticate`` (RFC 6750)."""
    reason = one_line(reason)  # reasons quote token contents: one safe line in the header
    return HubError(401, reason, _challenge(error, reason))


def forbidden(reason: str) -> HubError:
    """403: a valid token whose claims do not cover the request."""
    reason = one_line(reason)
    return HubError(403, reason, _challenge("insufficient_scope", reason))


def quoted(value: object, limit: int = 40) -> str:
    """A value taken from a token, quoted and cut short, for a reason."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def read_cookie(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a Cookie header, if present."""
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


class Carrier(enum.Enum):
    """Where a request's token came from (the cookie one needs a CSRF check to publish)."""

    HEADER = "Authorization header"
    QUERY = "authorization query parameter"
    COOKIE = "cookie"


@dataclass(frozen=True, slots=True)
class Token:
    """A request's token and its carrier."""

    value: str
    carrier: Carrier
    cookie_name: str = COOKIE

    @property
    def where(self) -> str:
        """The carrier as a person reads it in a refusal."""
        if self.carrier is Carrier.COOKIE:
            return f"{self.cookie_name} cookie"
        return str(self.carrier.value)


def find_token(
    header: str | None, query: str | None, cookie_header: str | None, cookie_name: str = COOKIE
) -> Token | None:
    """The token and its carrier, by the spec's precedence: header, then query, then cookie."""
    found = None
    if header is not None:
        found = _header_token(header) if len(header) <= _CACHED_HEADER else _bearer(header)
    elif query:
        found = Token(query, Carrier.QUERY)
    else:
        cookie = read_cookie(cookie_header, cookie_name)
        if cookie:
            found = Token(cookie, Carrier.COOKIE, cookie_name)
    if found is not None and len(found.value) > MAX_TOKEN:
        raise unauthorized(f"token from the {found.where} is longer than {MAX_TOKEN} characters")
    return found


def _bearer(header: str) -> Token:
    """The token of an ``Authorization: Bearer`` header."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if not token or scheme.lower() != "bearer":
        raise unauthorized("Authorization header must be 'Bearer <token>'", "invalid_request")
    return Token(token, Carrier.HEADER)


# A publisher sends the same header with every publish: read once, its Token is reused (a
# frozen value). Only headers of a usual token's size are kept, 64 of them.
_CACHED_HEADER = 2048
_header_token = lru_cache(maxsize=64)(_bearer)


__all__ = ["COOKIE", "MAX_TOKEN", "Carrier", "Token", "find_token", "forbidden", "unauthorized"]
