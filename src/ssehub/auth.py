"""Who may publish and subscribe to what: JWS from header, query or cookie, via PyJWT."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import jwt

from .errors import HubError
from .topics import TopicMatcher

COOKIE = "mercureAuthorization"


@dataclass(frozen=True, slots=True)
class Claims:
    """The parts of a verified token the hub acts on."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...] | None
    expires: float | None


def _unauthorized(reason: str) -> HubError:
    quoted = reason.replace("\\", "\\\\").replace('"', '\\"')
    challenge = f'Bearer error="invalid_token", error_description="{quoted}"'
    return HubError(401, reason, (("WWW-Authenticate", challenge),))


def read_cookie(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a Cookie header, if present."""
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def find_token(
    header: str | None, query: str | None, cookie_header: str | None
) -> tuple[str, str] | None:
    """The token and its carrier, by the spec's precedence: header, then query, then cookie."""
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("Authorization header must be 'Bearer <token>'")
        return token.strip(), "Authorization header"
    if query:
        return query, "authorization query parameter"
    cookie = read_cookie(cookie_header, COOKIE)
    if cookie:
        return cookie, f"{COOKIE} cookie"
    return None


def _selectors(claim: object, name: str, carrier: str) -> tuple[str, ...] | None:
    if claim is None:
        return None
    if not isinstance(claim, list) or not all(isinstance(s, str) for s in claim):
        raise HubError(403, f"token from the {carrier}: {name} must be an array of strings")
    return tuple(claim)


class Authenticator:
    """Verifies tokens with the publisher's or the subscriber's key."""

    def __init__(
        self,
        publisher_key: str | None,
        subscriber_key: str | None,
        algorithm: str = "HS256",
        matcher: TopicMatcher | None = None,
    ) -> None:
        self.publisher_key = publisher_key
        self.subscriber_key = subscriber_key
        self.algorithm = algorithm
        self.matcher = matcher or TopicMatcher()

    def verify(self, token: str, carrier: str, key: str) -> Claims:
        """Check signature and time claims; 401 with the reason when anything is wrong."""
        try:
            payload = jwt.decode(token, key, algorithms=[self.algorithm])
        except jwt.ExpiredSignatureError:
            raise _unauthorized(f"token from the {carrier} has expired") from None
        except jwt.ImmatureSignatureError:
            raise _unauthorized(f"token from the {carrier} is not valid yet (nbf/iat)") from None
        except jwt.InvalidSignatureError:
            raise _unauthorized(f"token from the {carrier} has a bad signature") from None
        except jwt.InvalidAlgorithmError:
            raise _unauthorized(
                f"token from the {carrier} is not signed with {self.algorithm}"
            ) from None
        except jwt.DecodeError:
            raise _unauthorized(f"token from the {carrier} is not a well-formed JWS") from None
        except jwt.InvalidTokenError as exc:
            raise _unauthorized(f"token from the {carrier} was refused: {exc}") from None
        mercure = payload.get("mercure")
        if mercure is None:
            mercure = {}
        if not isinstance(mercure, dict):
            raise HubError(403, f"token from the {carrier}: the mercure claim must be an object")
        exp = payload.get("exp")
        return Claims(
            _selectors(mercure.get("publish"), "mercure.publish", carrier) or (),
            _selectors(mercure.get("subscribe"), "mercure.subscribe", carrier),
            float(exp) if isinstance(exp, int | float) else None,
        )

    def publisher(self, found: tuple[str, str] | None, topics: Iterable[str]) -> Claims:
        """Claims of a publisher allowed to publish to every topic, else 401/403."""
        if self.publisher_key is None:
            raise HubError(403, "publishing is disabled: the hub has no publisher key")
        if found is None:
            raise _unauthorized(
                "no token: send 'Authorization: Bearer <jwt>', the authorization query "
                f"parameter or the {COOKIE} cookie"
            )
        claims = self.verify(*found, self.publisher_key)
        if not claims.publish:
            raise HubError(403, f"token from the {found[1]} has no mercure.publish selectors")
        for topic in topics:
            if not any(self.matcher.match(s, topic) for s in claims.publish):
                raise HubError(403, f"mercure.publish does not cover topic {topic!r}")
        return claims

    def subscriber(self, found: tuple[str, str] | None, anonymous: bool) -> Claims | None:
        """Claims of a subscriber, ``None`` for an allowed anonymous one, else 401."""
        if found is None:
            if anonymous:
                return None
            raise _unauthorized(
                "no token: this hub does not allow anonymous subscribers; send a JWT in the "
                f"{COOKIE} cookie, the authorization query parameter or an Authorization header"
            )
        if self.subscriber_key is None:
            raise _unauthorized("this hub has no subscriber key and cannot verify tokens")
        return self.verify(*found, self.subscriber_key)
