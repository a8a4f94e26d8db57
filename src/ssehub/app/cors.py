"""CORS for browsers calling the hub, and the CSRF check on cookie-authenticated publishes."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import HubError
from ..tokens import forbidden
from .answers import Headers, Request, Response, response

_ALLOW_HEADERS = "authorization, cache-control, content-type, last-event-id"
_EXPOSED = "Last-Event-ID, Mercure-Last-Event-ID, Link, WWW-Authenticate"


def _allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    return "*" in allowed or origin in allowed


class Cors:
    """The browser origins allowed to read answers, and to publish with a cookie."""

    __slots__ = ("origins", "publish_origins")

    def __init__(self, origins: tuple[str, ...], publish_origins: tuple[str, ...]) -> None:
        self.origins = origins
        self.publish_origins = publish_origins

    def headers(self, request: Request) -> Headers:
        """CORS headers for an allowed Origin; credentials need the origin echoed, not *."""
        origin = request.headers.get("origin")
        if origin is None or not _allowed(origin, self.origins):
            return ()
        if origin not in self.origins:
            # Allowed by '*' only: any origin, without credentials, as the CORS spec means
            # it; echoing it with credentials would let every site read a visitor's stream.
            return (
                ("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Expose-Headers", _EXPOSED),
            )
        return (
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Expose-Headers", _EXPOSED),
            ("Vary", "Origin"),
        )

    def preflight(self, request: Request, cors: Headers, allow: str) -> Response:
        """The answer to an OPTIONS preflight on the hub."""
        origin = request.headers.get("origin")
        if origin is None:
            raise HubError(
                405, "OPTIONS is only for CORS preflight requests (no Origin)", (("Allow", allow),)
            )
        if not cors:
            raise HubError(403, f"origin {origin!r} is not allowed: add it to --cors-origins")
        asked = request.headers.get("access-control-request-method", "GET").upper()
        if asked not in ("GET", "POST"):
            raise HubError(
                405, f"CORS method {asked} not allowed: GET or POST", (("Allow", allow), *cors)
            )
        extra = (
            ("Access-Control-Allow-Methods", "GET, POST"),
            ("Access-Control-Allow-Headers", _ALLOW_HEADERS),
            ("Access-Control-Max-Age", "600"),
        )
        return response(204, b"", headers=(*cors, *extra))

    def check_cookie_publish(self, request: Request) -> None:
        """A publish authenticated by cookie must come from an allowed origin: the browser
        sends cookies on cross-site requests, so without this any page could publish."""
        origin = request.headers.get("origin")
        if origin is None:
            referer = urlsplit(request.headers.get("referer", ""))
            origin = f"{referer.scheme}://{referer.netloc}" if referer.netloc else None
        if origin is None:
            raise forbidden("a cookie-authenticated publish needs an Origin or Referer header")
        if not _allowed(origin, self.publish_origins):
            raise forbidden(
                f"cookie-authenticated publish from origin {origin!r} refused: "
                "add it to --publish-origins"
            )
