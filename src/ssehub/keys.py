"""The key(s) that verify one kind of token: an HMAC secret, a PEM key (text or ``@path``), or
a JWKS (``@path.json``, or an ``http(s)://`` URL fetched off the event loop and refreshed)."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt

from .errors import ConfigError
from .tokens import quoted, unauthorized

log = logging.getLogger("ssehub.auth")

_JWKS_REFRESH = 300.0
_JWKS_RETRY = 10.0
_JWKS_MAX_BYTES = 1024 * 1024  # a key set is a few KiB; this bounds what a fetch may hold
# What PyJWKSet.from_json raises on a document that is not a usable key set.
_BAD_JWKS = (ValueError, KeyError, TypeError, AttributeError, jwt.PyJWTError)


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
                f"token from the {carrier} names key id {quoted(kid)}, not in the JWKS"
            )
        return found.key


def _jwks_reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"a key lacks its {exc.args[0]!r} member"
    return str(exc) or type(exc).__name__
