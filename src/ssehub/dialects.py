"""What the request's Mercure dialect changes in authorization, for every face.

A subscribe request says its dialect in its query (``topic`` is 0.x, ``match`` 1.0: see
``mercure.request_dialect``); a publish or a subscriptions API request says it with its
token (an RFC 9068 ``at+jwt`` access token is 1.0, any other JWS 0.x). ``--dialects`` turns
either off. Nothing here reads sockets or HTTP framing: a face passes header values.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import jwt

from .access_tokens import is_access_token
from .auth import DIALECT_0, DIALECT_1, Claims
from .errors import HubError
from .mercure import HUB_PATH, invalid_request, metadata_url, query_token, request_dialect
from .settings import Settings
from .tokens import Carrier, Token, find_token, unauthorized
from .topics import DEFAULT_BASE

Found = Token | None  # a token and the carrier it came in


def base_url(settings: Settings) -> str:
    """The hub's URL that relative URL patterns and topics resolve against."""
    return settings.resource or DEFAULT_BASE


def resources(settings: Settings, headers: Mapping[str, str]) -> tuple[str, ...]:
    """The resource identifiers a 1.0 access token's ``aud`` may name: ``--resource``, else
    the hub's URL as this client reached it (its Host; http or https, the scheme a proxy
    tells in X-Forwarded-Proto first)."""
    if settings.resource:
        return (settings.resource,)
    host, proto = headers.get("host", ""), headers.get("x-forwarded-proto", "")
    if len(host) + len(proto) <= _CACHED_HOST:
        return _hub_urls(host, proto)
    return _hub_urls.__wrapped__(host, proto)


_CACHED_HOST = 300  # a DNS name and a port fit; a longer Host is rare, and not kept


@lru_cache(maxsize=256)  # asked on every publish, and a hub is reached by a few names
def _hub_urls(host: str, proto: str) -> tuple[str, ...]:
    host = host.strip()
    if not host or any(c in host for c in "/?#@ \\"):
        return ()
    schemes = ["http", "https"]
    if proto.strip().lower() == "https":
        schemes.reverse()
    return tuple(f"{scheme}://{host}{HUB_PATH}" for scheme in schemes)


def find(settings: Settings, headers: Mapping[str, str], query: str, dialect: str | None) -> Found:
    """The token by the dialect's carriers: the Authorization header first; then for 0.x
    the ``authorization`` query parameter and the 0.x cookie; for 1.0 its cookie only. A
    request of unknown dialect (a publish) may use either cookie."""
    header = headers.get("authorization")
    cookies = headers.get("cookie")
    if dialect == DIALECT_1:
        return find_token(header, None, cookies, settings.access_cookie_name)
    found = find_token(header, query_token(query), cookies, settings.cookie_name)
    if found is None and dialect is None and DIALECT_1 in settings.dialects:
        found = find_token(None, None, cookies, settings.access_cookie_name)
    return found


def settle(settings: Settings, claims: Claims | None, found: Found, dialect: str | None) -> str:
    """The request's dialect once its token is known; refuses a token of a dialect turned
    off, a 0.x token on a 1.0 request, and a 1.0 token in the query string."""
    if claims is None or found is None:
        return dialect or DIALECT_0
    if claims.dialect not in settings.dialects:
        raise unauthorized(
            f"token from the {found.where} is a Mercure {claims.dialect} token, and that dialect "
            "is turned off on this hub (--dialects)"
        )
    if dialect == DIALECT_1 and claims.dialect != DIALECT_1:
        raise unauthorized(
            f"token from the {found.where} is not an RFC 9068 access token (typ at+jwt with "
            "authorization_details): Mercure 1.0 requests need one"
        )
    if claims.dialect == DIALECT_1 and found.carrier is Carrier.QUERY:
        raise invalid_request(
            "no token in the query string: Mercure 1.0 takes it in the Authorization "
            "header or the cookie"
        )
    return dialect or claims.dialect


def speaks_1(settings: Settings, headers: Mapping[str, str], query: str, stream: bool) -> bool:
    """Whether a refused request spoke 1.0: a subscribe by its query, any other by its
    token. Only those get 1.0's challenge: a 0.x client sees what it always saw."""
    if DIALECT_1 not in settings.dialects:
        return False
    if stream:
        try:
            return request_dialect(query) == DIALECT_1
        except HubError:
            return False
    try:
        found = find(settings, headers, query, None)
        return found is not None and is_access_token(jwt.get_unverified_header(found.value))
    except (HubError, jwt.InvalidTokenError):
        return False


def with_metadata(error: HubError, settings: Settings, headers: Mapping[str, str]) -> HubError:
    """The error with RFC 9728's ``resource_metadata`` in its Bearer challenge, so a 1.0
    client learns where to read how to get a token."""
    found = resources(settings, headers)
    if not found:
        return error
    location = metadata_url(found[0])
    changed = tuple(
        (name, f'{value}, resource_metadata="{location}"')
        if name == "WWW-Authenticate" and value.startswith("Bearer")
        else (name, value)
        for name, value in error.headers
    )
    if changed == error.headers:
        return error
    return HubError(error.status, error.reason, changed)
