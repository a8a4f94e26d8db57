"""What the framework integrations share: their settings, read from any mapping, and the
subscriber side (the URL a browser opens, the cookie that authorizes its private topics)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode, urlsplit

from ..auth import COOKIE, mint_token
from ..publisher import Publisher, compact_json

# Setting names, the same in Django's settings and Flask's app.config.
URL = "SSEHUB_URL"


@dataclass(frozen=True, slots=True)
class HubSettings:
    """The hub as an app sees it.

    ``url`` is where the app publishes; ``public_url`` where browsers subscribe (the same
    unless the hub sits behind another name). One ``SSEHUB_JWT_KEY`` serves both sides, or
    ``publisher_jwt_key`` / ``subscriber_jwt_key`` apart; ``publisher_token`` replaces the
    publisher key with a ready token.
    """

    url: str
    public_url: str
    publisher_jwt_key: str | None
    publisher_token: str | None
    subscriber_jwt_key: str | None
    jwt_algorithm: str = "HS256"
    cookie_name: str = COOKIE
    cookie_domain: str | None = None
    cookie_lifetime: int = 3600

    @classmethod
    def read(cls, get: Callable[[str], object]) -> HubSettings:
        """From ``SSEHUB_*`` names; ``get`` answers ``None`` for a missing one."""

        def text(name: str) -> str | None:
            value = get(name)
            if value is None or isinstance(value, str):
                return value or None
            raise ValueError(f"{name} must be a string, not {type(value).__name__}")

        url = text(URL)
        if url is None:
            raise ValueError(
                f"{URL} is not set: the hub's URL, e.g. http://hub:8000/.well-known/mercure"
            )
        key = text("SSEHUB_JWT_KEY")
        publisher_key = text("SSEHUB_PUBLISHER_JWT_KEY") or key
        publisher_token = text("SSEHUB_PUBLISHER_TOKEN")
        if publisher_token is not None:
            publisher_key = None
        elif publisher_key is None:
            raise ValueError(
                "set SSEHUB_JWT_KEY (or SSEHUB_PUBLISHER_JWT_KEY, or SSEHUB_PUBLISHER_TOKEN) "
                "to publish"
            )
        lifetime = get("SSEHUB_COOKIE_LIFETIME") or 3600
        if not isinstance(lifetime, int) or lifetime <= 0:
            raise ValueError(
                f"SSEHUB_COOKIE_LIFETIME must be a positive int (seconds), not {lifetime!r}"
            )
        return cls(
            url=url,
            public_url=text("SSEHUB_PUBLIC_URL") or url,
            publisher_jwt_key=publisher_key,
            publisher_token=publisher_token,
            subscriber_jwt_key=text("SSEHUB_SUBSCRIBER_JWT_KEY") or key,
            jwt_algorithm=text("SSEHUB_JWT_ALGORITHM") or "HS256",
            cookie_name=text("SSEHUB_COOKIE_NAME") or COOKIE,
            cookie_domain=text("SSEHUB_COOKIE_DOMAIN"),
            cookie_lifetime=lifetime,
        )

    def publisher(self, dumps: Callable[[object], str] = compact_json) -> Publisher:
        """A publisher for this hub (one per process: it keeps its connection)."""
        return Publisher(
            self.url,
            key=self.publisher_jwt_key,
            token=self.publisher_token,
            algorithm=self.jwt_algorithm,
            dumps=dumps,
        )

    def subscriber_url(self, topics: Iterable[str], last_event_id: str | None = None) -> str:
        """The URL for ``new EventSource(…)`` on these topic selectors."""
        query = [("topic", t) for t in topics]
        if last_event_id is not None:
            query.append(("lastEventID", last_event_id))
        if not query:
            raise ValueError("a subscription needs at least one topic selector")
        return f"{self.public_url}{'&' if '?' in self.public_url else '?'}{urlencode(query)}"

    def subscriber_cookie(self, topics: Sequence[str]) -> Cookie:
        """The ``mercureAuthorization`` cookie that lets a browser receive the private updates
        of these topic selectors (and only those), for ``cookie_lifetime`` seconds."""
        if self.subscriber_jwt_key is None:
            raise ValueError(
                "set SSEHUB_JWT_KEY or SSEHUB_SUBSCRIBER_JWT_KEY to authorize subscribers"
            )
        if not topics:
            raise ValueError("authorize at least one topic selector")
        token = mint_token(
            self.subscriber_jwt_key,
            subscribe=topics,
            expires_in=self.cookie_lifetime,
            algorithm=self.jwt_algorithm,
        )
        public = urlsplit(self.public_url)
        return Cookie(
            name=self.cookie_name,
            value=token,
            max_age=self.cookie_lifetime,
            path=public.path or "/",
            domain=self.cookie_domain,
            secure=public.scheme == "https",
        )


@dataclass(frozen=True, slots=True)
class Cookie:
    """A cookie for the framework's ``response.set_cookie``: HttpOnly (scripts never see the
    token), sent only to the hub's path, SameSite=Strict (the hub must be on the app's site)."""

    name: str
    value: str
    max_age: int
    path: str
    domain: str | None
    secure: bool
    httponly: bool = True
    samesite: Literal["Strict"] = "Strict"

    def set_on(self, set_cookie: Callable[..., object]) -> None:
        """Call a response's ``set_cookie`` (Django's and Werkzeug's take the same names)."""
        set_cookie(
            self.name,
            self.value,
            max_age=self.max_age,
            path=self.path,
            domain=self.domain,
            secure=self.secure,
            httponly=self.httponly,
            samesite=self.samesite,
        )
