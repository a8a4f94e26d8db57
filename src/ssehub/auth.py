"""Who may publish and subscribe to what: JWS from header, query or cookie, via PyJWT.

Keys come as an HMAC secret, a PEM key (text or ``@path``), or a JWKS (``@path.json`` or an
``http(s)://`` URL fetched off the event loop and refreshed). Only the configured algorithms
are accepted, never ``none``, and PyJWT refuses an asymmetric key used as an HMAC secret, so
an RS/HS confusion fails with a reason instead of verifying.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from .errors import ConfigError, HubError, one_line
from .topics import TopicMatcher

log = logging.getLogger("ssehub.auth")

COOKIE = "mercureAuthorization"
_JWKS_REFRESH = 300.0
_VERIFIED_MAX = 4096
_VERIFIED_CHARS = 4 << 20  # tokens may be 16 KiB each: count them, not only how many
_JWKS_RETRY = 10.0
# Far above any real token, far below what it costs to decode and verify a huge one on every
# request: the standalone server bounds heads anyway, an ASGI server may not.
MAX_TOKEN = 16 * 1024
_JWKS_MAX_BYTES = 1024 * 1024  # a key set is a few KiB; this bounds what a fetch may hold
# What PyJWKSet.from_json raises on a document that is not a usable key set.
_BAD_JWKS = (ValueError, KeyError, TypeError, AttributeError, jwt.PyJWTError)


@dataclass(frozen=True, slots=True)
class Claims:
    """The parts of a verified token the hub acts on."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...] | None
    expires: float | None
    payload: object = None  # mercure.payload, shown in subscription events


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


def _quoted(value: object, limit: int = 40) -> str:
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


def find_token(
    header: str | None, query: str | None, cookie_header: str | None, cookie_name: str = COOKIE
) -> tuple[str, str] | None:
    """The token and its carrier, by the spec's precedence: header, then query, then cookie."""
    found = None
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("Authorization header must be 'Bearer <token>'", "invalid_request")
        found = token.strip(), "Authorization header"
    elif query:
        found = query, "authorization query parameter"
    else:
        cookie = read_cookie(cookie_header, cookie_name)
        if cookie:
            found = cookie, f"{cookie_name} cookie"
    if found is not None and len(found[0]) > MAX_TOKEN:
        raise unauthorized(f"token from the {found[1]} is longer than {MAX_TOKEN} characters")
    return found


class KeySet:
    """The key(s) that verify one kind of token."""

    def __init__(self, spec: str, label: str = "JWT key") -> None:
        self.spec = spec
        self.label = label  # names the setting in startup errors
        self._key: Any = None
        self._jwks: dict[str, Any] = {}
        self._url: str | None = None
        self._fetched = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self.generation = 0  # bumped when the keys change, so remembered tokens are re-checked
        if spec.startswith(("http://", "https://")):
            self._url = spec
        elif spec.startswith("@"):
            try:
                text = Path(spec[1:]).read_text()
            except UnicodeDecodeError:
                raise ConfigError(
                    f"{label} {spec}: {spec[1:]!r} is not text (a PEM key or a JWKS is)"
                ) from None
            except OSError as exc:
                reason = exc.strerror or exc
                raise ConfigError(f"{label} {spec}: cannot read {spec[1:]!r}: {reason}") from exc
            if text.lstrip().startswith("{"):
                try:
                    self._load_jwks(text)
                except _BAD_JWKS as exc:
                    raise ConfigError(
                        f"{label} {spec}: not a usable JWKS: {_jwks_reason(exc)}"
                    ) from exc
            else:
                self._key = text
        else:
            self._key = spec

    def _load_jwks(self, text: str) -> None:
        keys = jwt.PyJWKSet.from_json(text)
        self._jwks = {k.key_id or "": k for k in keys.keys}
        self.generation += 1

    async def refresh(self, strict: bool = False) -> None:
        """Fetch a JWKS URL again (in a thread: urllib blocks); a failure is logged and retried
        later, or with ``strict`` (the first fetch, at start) raised as a ConfigError."""
        url = self._url
        if url is None:
            return

        def fetch() -> str:
            with urllib.request.urlopen(url, timeout=5) as answer:
                body = answer.read(_JWKS_MAX_BYTES + 1)
            if len(body) > _JWKS_MAX_BYTES:
                raise ValueError(f"the answer is larger than {_JWKS_MAX_BYTES} bytes")
            return str(body.decode("utf-8"))

        try:
            self._load_jwks(await asyncio.to_thread(fetch))
            self._fetched = time.monotonic()
        except (OSError, *_BAD_JWKS) as exc:
            if strict:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else _jwks_reason(exc)
                raise ConfigError(
                    f"{self.label} {url}: could not fetch the JWKS ({reason}): check the URL and"
                    " that its server answers from this host"
                ) from exc
            log.warning("could not fetch the JWKS at %s: %s", url, exc)
            self._fetched = time.monotonic() - _JWKS_REFRESH + _JWKS_RETRY

    def _schedule_refresh(self) -> None:
        if self._url is None or (self._refreshing is not None and not self._refreshing.done()):
            return
        if time.monotonic() - self._fetched < _JWKS_REFRESH and self._jwks:
            return
        try:
            self._refreshing = asyncio.get_running_loop().create_task(self.refresh())
        except RuntimeError:  # no loop: a synchronous caller (tests, tools)
            asyncio.run(self.refresh())

    def check(self, algorithms: list[str]) -> None:
        """Refuse a single key that none of ``algorithms`` can verify with (a PEM key with
        only HS256 allowed, an HMAC secret with only RS256): every token would be refused."""
        if self._key is None:
            return
        reasons = []
        for name in algorithms:
            try:
                jwt.get_algorithm_by_name(name).prepare_key(self._key)
            except (jwt.InvalidKeyError, ValueError, TypeError, NotImplementedError) as exc:
                reasons.append(f"{name}: {exc}")
            else:
                return
        shown = self.spec if self.spec.startswith("@") else "(given inline)"
        raise ConfigError(
            f"{self.label} {shown} cannot verify tokens signed with {', '.join(algorithms)}"
            f" ({'; '.join(reasons)}): check the key and --jwt-algorithm"
        )

    def key_for(self, token: str, carrier: str) -> Any:
        """The verification key for ``token`` (by ``kid`` for a JWKS)."""
        if self._key is not None:
            return self._key
        self._schedule_refresh()
        try:
            kid = jwt.get_unverified_header(token).get("kid") or ""
        except jwt.DecodeError:
            raise unauthorized(f"token from the {carrier} is not a well-formed JWS") from None
        if not isinstance(kid, str):
            raise unauthorized(f"token from the {carrier} has a kid that is not a string")
        found = self._jwks.get(kid)
        if found is None and not kid and len(self._jwks) == 1:
            found = next(iter(self._jwks.values()))  # one key and no kid: that key
        if found is None:
            raise unauthorized(
                f"token from the {carrier} names key id {_quoted(kid)}, not in the JWKS"
            )
        return found.key


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
        self._verified: dict[tuple[str, int, int], tuple[Claims, float]] = {}
        self._verified_chars = 0

    async def start(self) -> None:
        """Fetch JWKS URLs once before the first request; ConfigError if one does not answer."""
        for keys in (self.publisher_keys, self.subscriber_keys):
            if keys is not None:
                await keys.refresh(strict=True)

    def verify(self, token: str, carrier: str, keys: KeySet) -> Claims:
        """Check signature, algorithm and time/audience/issuer claims; 401 with the reason.

        A token that verified once is remembered (bounded, first in first out) with its time
        window: a publisher reusing one token pays for the signature once, not per publish.
        Failures are never cached, so every refusal keeps its exact reason."""
        cache_key = (token, id(keys), keys.generation)
        cached = self._verified.get(cache_key)
        if cached is not None:
            claims, valid_from = cached
            now = time.time()
            if now + self.leeway >= valid_from and (
                claims.expires is None or now - self.leeway < claims.expires
            ):
                return claims
            del self._verified[cache_key]
            self._verified_chars -= len(token)
        claims, valid_from = self._verify(token, carrier, keys)
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

    def _verify(self, token: str, carrier: str, keys: KeySet) -> tuple[Claims, float]:
        of = f"token from the {carrier}"
        try:
            key = keys.key_for(token, carrier)
            if not isinstance(key, str):
                self._check_family(token, key, of)
            payload = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                leeway=self.leeway,
                audience=self.audience,
                issuer=self.issuer,
                options={"verify_aud": self.audience is not None},
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
        return claims, _seconds(payload.get("nbf")) or 0.0

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

    def publisher(self, found: tuple[str, str] | None, topics: Iterable[str]) -> Claims:
        """Claims of a publisher allowed to publish to every topic, else 401/403."""
        if self.publisher_keys is None:
            raise forbidden("publishing is disabled: the hub has no publisher key")
        if found is None:
            raise unauthorized(
                "no token: send 'Authorization: Bearer <jwt>', the authorization query "
                "parameter or the cookie",
                None,
            )
        claims = self.verify(*found, self.publisher_keys)
        if not claims.publish:
            raise forbidden(f"token from the {found[1]} has no mercure.publish selectors")
        for topic in topics:
            if not any(self.matcher.match(s, topic) for s in claims.publish):
                raise forbidden(f"mercure.publish does not cover topic {topic!r}")
        return claims

    def subscriber(self, found: tuple[str, str] | None, anonymous: bool) -> Claims | None:
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
        return self.verify(*found, self.subscriber_keys)


def _jwks_reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"a key lacks its {exc.args[0]!r} member"
    return str(exc) or type(exc).__name__


def _header_alg(token: str) -> str:
    try:
        alg = jwt.get_unverified_header(token).get("alg")
    except jwt.InvalidTokenError:
        return "an unreadable algorithm"
    return _quoted(alg)


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


__all__ = ["COOKIE", "Authenticator", "Claims", "KeySet", "find_token", "mint_token"]
