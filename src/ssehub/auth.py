"""Who may publish and subscribe to what: JWS from header, query or cookie, via PyJWT.

Keys come as an HMAC secret, a PEM key (text or ``@path``), or a JWKS (``@path.json`` or an
``http(s)://`` URL fetched off the event loop and refreshed). Only the configured algorithms
are accepted, never ``none``, and PyJWT refuses an asymmetric key used as an HMAC secret, so
an RS/HS confusion fails with a reason instead of verifying.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from .access_tokens import DetailsError, grants, is_access_token
from .keys import KeySet
from .tokens import (
    COOKIE,
    Carrier,
    Token,
    find_token,
    forbidden,
    quoted,
    unauthorized,
)
from .topics import TopicMatcher

log = logging.getLogger("ssehub.auth")

ACCESS_COOKIE = "__Secure-mercure_access_token"  # Mercure 1.0's
DIALECT_0 = "0.x"  # a JWS with a ``mercure`` claim (draft-07)
DIALECT_1 = "1.0"  # an RFC 9068 access token with authorization_details (draft-08)
_VERIFIED_MAX = 4096
_VERIFIED_CHARS = 4 << 20  # tokens may be 16 KiB each: count them, not only how many


@dataclass(frozen=True, slots=True)
class Claims:
    """The parts of a verified token the hub acts on."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...] | None
    expires: float | None
    payload: object = None  # mercure.payload, shown in subscription events
    dialect: str = DIALECT_0  # which kind of token granted these


class Authenticator:
    """Verifies tokens with the publisher's or the subscriber's keys."""

    def __init__(
        self,
        publisher_key: str | None,
        subscriber_key: str | None,
        algorithm: str = "HS256",
        matcher: TopicMatcher | None = None,
        *,
        leeway: float = 0.0,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self.publisher_keys = KeySet(publisher_key, "publisher JWT key") if publisher_key else None
        self.subscriber_keys = (
            KeySet(subscriber_key, "subscriber JWT key") if subscriber_key else None
        )
        self.algorithms = [a.strip() for a in algorithm.split(",") if a.strip()]
        if any(a.lower() == "none" for a in self.algorithms):
            raise ValueError("the 'none' algorithm would accept unsigned tokens")
        for keys in (self.publisher_keys, self.subscriber_keys):
            if keys is not None:
                keys.check(self.algorithms)
        self.matcher = matcher or TopicMatcher()
        self.leeway = leeway
        self.audience = audience
        self.issuer = issuer
        self._verified: dict[tuple[str, int, int, tuple[str, ...]], tuple[Claims, float]] = {}
        self._verified_chars = 0

    async def start(self) -> None:
        """Fetch JWKS URLs once before the first request; ConfigError if one does not answer."""
        for keys in (self.publisher_keys, self.subscriber_keys):
            if keys is not None:
                await keys.refresh(strict=True)

    def verify(
        self, token: str, carrier: str, keys: KeySet, resource: tuple[str, ...] = ()
    ) -> Claims:
        """Check signature, algorithm and time/audience/issuer claims; 401 with the reason.

        An RFC 9068 access token (``typ: at+jwt``) is read as Mercure 1.0: its ``aud`` must
        name one of ``resource`` (the hub's resource identifiers), ``exp`` is required and
        its grants come from ``authorization_details``. Any other JWS is read as 0.x.

        A token that verified once is remembered (bounded, first in first out) with its time
        window: a publisher reusing one token pays for the signature once, not per publish.
        Failures are never cached, so every refusal keeps its exact reason."""
        claims = self._remembered(token, keys, resource)
        return self._verify_new(token, carrier, keys, resource) if claims is None else claims

    def _remembered(self, token: str, keys: KeySet, resource: tuple[str, ...]) -> Claims | None:
        """The claims of ``token`` if it verified before and is still within its window."""
        cache_key = (token, id(keys), keys.generation, resource)
        cached = self._verified.get(cache_key)
        if cached is None:
            return None
        claims, valid_from = cached
        now = time.time()
        if now + self.leeway >= valid_from and (
            claims.expires is None or now - self.leeway < claims.expires
        ):
            return claims
        del self._verified[cache_key]
        self._verified_chars -= len(token)
        return None

    def _verify_new(
        self, token: str, carrier: str, keys: KeySet, resource: tuple[str, ...]
    ) -> Claims:
        """Verify ``token`` (it is not remembered) and remember it."""
        cache_key = (token, id(keys), keys.generation, resource)
        claims, valid_from = self._verify(token, carrier, keys, resource)
        verified = self._verified
        while verified and (
            len(verified) >= _VERIFIED_MAX or self._verified_chars + len(token) > _VERIFIED_CHARS
        ):
            oldest = next(iter(verified))
            del verified[oldest]
            self._verified_chars -= len(oldest[0])
        verified[cache_key] = (claims, valid_from)
        self._verified_chars += len(token)
        return claims

    @property
    def cached_chars(self) -> int:
        """Characters of the remembered tokens (bounded, like their number)."""
        return self._verified_chars

    def _verify(
        self, token: str, carrier: str, keys: KeySet, resource: tuple[str, ...]
    ) -> tuple[Claims, float]:
        of = f"token from the {carrier}"
        try:
            access = is_access_token(jwt.get_unverified_header(token))
            key = keys.key_for(token, carrier)
            if not isinstance(key, str):
                self._check_family(token, key, of)
            audience: str | list[str] | None = self.audience
            options: Any = {"verify_aud": self.audience is not None}
            if access:  # RFC 9068: aud is the hub's resource identifier, exp is required
                audience = list(resource)
                options = {"verify_aud": True, "require": ["exp", "aud"]}
            payload = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                leeway=self.leeway,
                audience=audience,
                issuer=self.issuer,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized(f"{of} has expired (exp)") from None
        except jwt.ImmatureSignatureError:
            raise unauthorized(f"{of} is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise unauthorized(f"{of} is for another audience (aud)") from None
        except jwt.InvalidIssuerError:
            raise unauthorized(f"{of} comes from another issuer (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"{of} lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise unauthorized(f"{of} has a bad signature") from None
        except jwt.InvalidAlgorithmError:
            alg = _header_alg(token)
            raise unauthorized(
                f"{of} is signed with {alg}; this hub accepts {', '.join(self.algorithms)}"
            ) from None
        except jwt.InvalidKeyError:
            raise unauthorized(
                f"{of} cannot be verified with the configured key (wrong algorithm family)"
            ) from None
        except jwt.DecodeError:
            raise unauthorized(f"{of} is not a well-formed JWS") from None
        except jwt.InvalidTokenError as exc:
            raise unauthorized(f"{of} was refused: {exc}") from None
        except (TypeError, ValueError) as exc:
            # What PyJWT or cryptography raise on a key they cannot use for this token; the
            # family check above should leave none, so say it in the log, not only in a 401.
            log.warning("a token could not be verified: %s: %s", type(exc).__name__, exc)
            raise unauthorized(f"{of} cannot be verified with the configured key") from None
        if not isinstance(payload, dict):  # PyJWT checks this; a hostile token must not pass
            raise unauthorized(f"{of} has a payload that is not a JSON object")
        valid_from = _seconds(payload.get("nbf")) or 0.0
        if access:
            try:
                granted = grants(payload.get("authorization_details"))
            except DetailsError as exc:
                raise unauthorized(f"{of}: {exc}") from None
            claims = Claims(
                granted.publish,
                granted.subscribe,
                _seconds(payload.get("exp")),
                granted.payload,
                DIALECT_1,
            )
            return claims, valid_from
        mercure = payload.get("mercure")
        if mercure is None:
            mercure = {}
        if not isinstance(mercure, dict):
            raise forbidden(f"{of}: the mercure claim must be an object")
        claims = Claims(
            _selectors(mercure.get("publish"), "mercure.publish", of) or (),
            _selectors(mercure.get("subscribe"), "mercure.subscribe", of),
            _seconds(payload.get("exp")),
            mercure.get("payload"),
        )
        return claims, valid_from

    def _check_family(self, token: str, key: object, of: str) -> None:
        """A JWKS key is a key object of one family (RSA, EC, OKP, HMAC bytes): a token
        whose ``alg`` is of another family is refused here with a reason, before PyJWT
        would hand the key to an algorithm that cannot use it."""
        alg = jwt.get_unverified_header(token).get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            return  # PyJWT refuses it with its own reason
        try:
            jwt.get_algorithm_by_name(alg).prepare_key(key)
        except (jwt.InvalidKeyError, TypeError, ValueError, NotImplementedError):
            raise unauthorized(
                f"{of} is signed with {alg}, which does not fit its key in the JWKS"
            ) from None

    def publisher(
        self,
        found: Token | None,
        topics: Iterable[str],
        *,
        resource: tuple[str, ...] = (),
    ) -> Claims:
        """Claims of a publisher allowed to publish to every topic, else 401/403."""
        if self.publisher_keys is None:
            raise forbidden("publishing is disabled: the hub has no publisher key")
        if found is None:
            raise unauthorized(
                "no token: send 'Authorization: Bearer <jwt>', the authorization query "
                "parameter or the cookie",
                None,
            )
        keys = self.publisher_keys
        # Once per publish: where the token came from is only worded when it is new.
        claims = self._remembered(found.value, keys, resource)
        if claims is None:
            claims = self._verify_new(found.value, found.where, keys, resource)
        allowed = claims.publish
        if not allowed:
            raise forbidden(f"token from the {found.where} has no {_publish_grant(claims)}")
        match = self.matcher.match
        for topic in topics:
            for selector in allowed:
                if match(selector, topic):
                    break
            else:
                raise forbidden(f"{_publish_grant(claims)} does not cover topic {topic!r}")
        return claims

    def subscriber(
        self,
        found: Token | None,
        anonymous: bool,
        *,
        resource: tuple[str, ...] = (),
    ) -> Claims | None:
        """Claims of a subscriber, ``None`` for an allowed anonymous one, else 401."""
        if found is None:
            if anonymous:
                return None
            raise unauthorized(
                "no token: this hub does not allow anonymous subscribers; send a JWT in the "
                "cookie, the authorization query parameter or an Authorization header",
                None,
            )
        if self.subscriber_keys is None:
            raise unauthorized("this hub has no subscriber key and cannot verify tokens")
        return self.verify(found.value, found.where, self.subscriber_keys, resource)


def _publish_grant(claims: Claims) -> str:
    """What grants publishing, in the words of the token's dialect."""
    return "mercure.publish" if claims.dialect == DIALECT_0 else "a publish grant"


def _header_alg(token: str) -> str:
    try:
        alg = jwt.get_unverified_header(token).get("alg")
    except jwt.InvalidTokenError:
        return "an unreadable algorithm"
    return quoted(alg)


def _seconds(claim: object) -> float | None:
    """A NumericDate claim as seconds; one too large for a float is as good as never."""
    if isinstance(claim, bool) or not isinstance(claim, int | float):
        return None
    try:
        seconds = float(claim)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def _selectors(claim: object, name: str, of: str) -> tuple[str, ...] | None:
    if claim is None:
        return None
    if not isinstance(claim, list) or not all(isinstance(s, str) for s in claim):
        raise forbidden(f"{of}: {name} must be an array of strings")
    return tuple(claim)


def signing_key(key: str) -> str:
    """An HMAC secret as given, or the PEM private key of ``@path``."""
    return Path(key[1:]).read_text() if key.startswith("@") else key


def mint_token(
    key: str,
    *,
    publish: Iterable[str] = (),
    subscribe: Iterable[str] = (),
    expires_in: float | None = None,
    algorithm: str = "HS256",
    claims: Mapping[str, object] | None = None,
) -> str:
    """A JWT carrying ``mercure.publish`` / ``mercure.subscribe`` selectors (each only if
    given), ``exp`` when ``expires_in`` is set, and any extra ``claims`` (aud, iss, sub…).

    ``key`` is an HMAC secret or ``@path`` of a PEM private key, as ``ssehub token --key``.
    """
    mercure: dict[str, list[str]] = {}
    if publish := list(publish):
        mercure["publish"] = publish
    if subscribe := list(subscribe):
        mercure["subscribe"] = subscribe
    payload: dict[str, object] = {"mercure": mercure}
    if expires_in is not None:
        payload["exp"] = int(time.time() + expires_in)
    payload.update(claims or {})
    return jwt.encode(payload, signing_key(key), algorithm=algorithm)


__all__ = [
    "ACCESS_COOKIE",
    "COOKIE",
    "DIALECT_0",
    "DIALECT_1",
    "Authenticator",
    "Carrier",
    "Claims",
    "KeySet",
    "Token",
    "find_token",
    "mint_token",
]
