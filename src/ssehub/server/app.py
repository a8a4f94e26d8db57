"""What the server does with a request: route, publish, open a stream, serve the demo."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from importlib import resources
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import jwt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..auth import Authenticator, find_token, forbidden
from ..backends import EARLIEST, OutcomeUnknown, Replay
from ..errors import HubError
from ..events import Event, StoredEvent
from ..hub import Hub
from ..mercure import HUB_PATH, LINK, gap_notice, parse_publish, parse_subscribe, query_token
from ..metrics import CONTENT_TYPE, Metrics
from ..settings import Settings
from ..sse import encode_comment
from ..subscriber import Frame, Stream, Subscriber
from ..subscriptions import PREFIX as SUBSCRIPTIONS
from ..subscriptions import Subscriptions
from ..topics import check_selectors
from .http import Request, Response, error_response, response

if TYPE_CHECKING:
    from .protocol import Pending

CLOCK_TOPIC = "urn:ssehub:clock"
DEMO_TOPIC = "urn:ssehub:demo"
_DEMO_TOKEN_TTL = 24 * 3600
_CORS_HEADERS = "authorization, cache-control, content-type, last-event-id"

Headers = tuple[tuple[str, str], ...]

_STREAM_HEADERS = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0"),
    ("X-Accel-Buffering", "no"),
    ("Link", LINK),
]


class Connection(Protocol):
    """What the sweep and the drain need of a connection, HTTP/1.1 or HTTP/2."""

    def check(self, now: float) -> None: ...

    def drain_close(self) -> None: ...

    def abort(self) -> None: ...


class App:
    """The hub's HTTP face, shared by every connection of one server."""

    Preamble = Callable[[Replay | None], tuple[list[tuple[str, str]], bytes]]
    """Headers and first body bytes of a stream, once its replay is known."""

    def __init__(self, settings: Settings, hub: Hub) -> None:
        self.settings = settings
        self.hub = hub
        self.auth = Authenticator(
            settings.publisher_jwt_key,
            settings.subscriber_jwt_key,
            settings.jwt_algorithm,
            hub.matcher,
            leeway=settings.jwt_leeway,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )
        self.connections: set[Connection] = set()
        self.rejections = {401: 0, 403: 0}
        self.subscriptions = Subscriptions(hub) if settings.subscriptions else None
        self._subscriber_ids: dict[Subscriber, str] = {}
        self.metrics = Metrics(hub, self._extra_metrics)
        self.per_address: dict[str, int] = {}
        self.all_closed: asyncio.Event | None = None  # set by the drain to hear the last close
        self._page: bytes | None = None

    # -- routing -------------------------------------------------------------------------------

    def is_stream(self, request: Request) -> bool:
        return request.path == HUB_PATH and request.method == "GET"

    def handle(self, request: Request) -> Pending:
        """Answer a request that is not a stream: bytes now, or a future for a publish."""
        cors = self.cors(request)
        try:
            answer = self._route(request, cors)
        except HubError as error:
            self.count(error)
            answer = error_response(error, request.keep_alive, cors)
        if request.method == "HEAD" and isinstance(answer, Response):
            answer.bodiless = True  # every answer to a HEAD, refusals too: no body on the wire
        return answer

    def count(self, error: HubError) -> None:
        """Auth refusals, for the metrics."""
        if error.status in self.rejections:
            self.rejections[error.status] += 1

    def _extra_metrics(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "ssehub_connections", "Open client connections.", value=len(self.connections)
        )
        family = CounterMetricFamily(
            "ssehub_auth_rejections", "Requests refused by auth.", labels=["status"]
        )
        for status, count in self.rejections.items():
            family.add_metric([str(status)], count)
        yield family

    def _route(self, request: Request, cors: Headers) -> Pending:
        path, method = request.path, request.method
        if path == HUB_PATH:
            if method == "POST":
                return self._publish(request, cors)
            if method == "OPTIONS":
                return self._preflight(request, cors)
            raise HubError(
                405,
                f"{method} not allowed here: GET subscribes, POST publishes",
                (("Allow", "GET, POST, OPTIONS"),),
            )
        if self.subscriptions is not None and path.startswith(SUBSCRIPTIONS):
            if method not in ("GET", "HEAD"):
                raise HubError(
                    405,
                    f"{method} not allowed on the subscriptions API",
                    (("Allow", "GET, HEAD"),),
                )
            return self._subscriptions(request, cors)
        if path == "/metrics":
            if method not in ("GET", "HEAD"):
                raise HubError(405, f"{method} not allowed on /metrics", (("Allow", "GET, HEAD"),))
            return response(200, self.metrics.render(), CONTENT_TYPE, keep_alive=request.keep_alive)
        if path in ("/healthz", "/readyz"):
            if method not in ("GET", "HEAD"):
                raise HubError(405, f"{method} not allowed on {path}", (("Allow", "GET, HEAD"),))
            return response(200, b"ok\n", keep_alive=request.keep_alive)
        if path == "/" and self.settings.demo:
            if method not in ("GET", "HEAD"):
                raise HubError(
                    405, f"{method} not allowed on the demo page", (("Allow", "GET, HEAD"),)
                )
            return self._demo_page(request)
        raise HubError(404, f"no such path {path!r}: the hub is at {HUB_PATH}")

    def _subscriptions(self, request: Request, cors: Headers) -> Response:
        """The subscriptions API; the URL must match one of the token's mercure.subscribe."""
        assert self.subscriptions is not None
        found = self._token(request)
        claims = self.auth.subscriber(found, anonymous=False)
        assert claims is not None
        selectors = claims.subscribe or ()
        if not any(self.hub.matcher.match(s, request.path) for s in selectors):
            raise forbidden(f"mercure.subscribe does not cover {request.path!r}")
        body = json.dumps(self.subscriptions.answer(request.path)).encode()
        return response(
            200, body, "application/ld+json", headers=cors, keep_alive=request.keep_alive
        )

    def stream_closed(self, sub: Subscriber) -> None:
        """A stream ended: announce the end of its subscriptions."""
        subscriber = self._subscriber_ids.pop(sub, None)
        if subscriber is not None and self.subscriptions is not None:
            self.subscriptions.closed(subscriber)

    def _token(self, request: Request, query: str | None = None) -> tuple[str, str] | None:
        """The request's token and its carrier (header, then query, then cookie)."""
        headers = request.headers
        return find_token(
            headers.get("authorization"),
            query if query is not None else query_token(request.query),
            headers.get("cookie"),
            self.settings.cookie_name,
        )

    # -- CORS and CSRF -------------------------------------------------------------------------

    def _origin_allowed(self, origin: str, allowed: tuple[str, ...]) -> bool:
        return "*" in allowed or origin in allowed

    def cors(self, request: Request) -> Headers:
        """CORS headers for an allowed Origin; credentials need the origin echoed, not *."""
        origin = request.headers.get("origin")
        allowed = self.settings.cors_origins
        if origin is None or not self._origin_allowed(origin, allowed):
            return ()
        if origin not in allowed:
            # Allowed by '*' only: any origin, without credentials, as the CORS spec means
            # it; echoing it with credentials would let every site read a visitor's stream.
            return (
                ("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Expose-Headers", "Last-Event-ID, Link"),
            )
        return (
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Expose-Headers", "Last-Event-ID, Link"),
            ("Vary", "Origin"),
        )

    def _preflight(self, request: Request, cors: Headers) -> Response:
        origin = request.headers.get("origin")
        if origin is None:
            raise HubError(
                405,
                "OPTIONS is only for CORS preflight requests (no Origin)",
                (("Allow", "GET, POST, OPTIONS"),),
            )
        if not cors:
            raise HubError(403, f"origin {origin!r} is not allowed: add it to --cors-origins")
        asked = request.headers.get("access-control-request-method", "GET").upper()
        if asked not in ("GET", "POST"):
            raise HubError(
                405,
                f"CORS method {asked} not allowed: GET or POST",
                (("Allow", "GET, POST, OPTIONS"), *cors),
            )
        extra = (
            ("Access-Control-Allow-Methods", "GET, POST"),
            ("Access-Control-Allow-Headers", _CORS_HEADERS),
            ("Access-Control-Max-Age", "600"),
        )
        return response(204, b"", headers=(*cors, *extra), keep_alive=request.keep_alive)

    def _check_cookie_origin(self, request: Request) -> None:
        """A publish authenticated by cookie must come from an allowed origin: the browser
        sends cookies on cross-site requests, so without this any page could publish."""
        origin = request.headers.get("origin")
        if origin is None:
            referer = urlsplit(request.headers.get("referer", ""))
            origin = f"{referer.scheme}://{referer.netloc}" if referer.netloc else None
        if origin is None:
            raise forbidden("a cookie-authenticated publish needs an Origin or Referer header")
        if not self._origin_allowed(origin, self.settings.publish_origins):
            raise forbidden(
                f"cookie-authenticated publish from origin {origin!r} refused: "
                "add it to --publish-origins"
            )

    # -- publishing ----------------------------------------------------------------------------

    def _publish(self, request: Request, cors: Headers) -> Pending:
        event = parse_publish(request.body, request.headers.get("content-type"))
        found = self._token(request)
        if found is not None and found[1].endswith(" cookie"):
            self._check_cookie_origin(request)
        self.auth.publisher(found, event.topics)
        longest = max(len(topic) for topic in event.topics)
        if longest > self.settings.max_topic_length:
            raise HubError(
                400,
                f"topic too long: {longest} characters, at most {self.settings.max_topic_length}"
                " (--max-topic-length)",
            )
        stored = self.hub.publish(event)
        answer: asyncio.Future[Response] = stored.get_loop().create_future()
        keep_alive = request.keep_alive

        def done(_: asyncio.Future[StoredEvent]) -> None:
            if not answer.done():
                answer.set_result(self.published(stored, keep_alive, cors))

        stored.add_done_callback(done)
        return answer

    @staticmethod
    def published(
        stored: asyncio.Future[StoredEvent], keep_alive: bool, cors: Headers = ()
    ) -> Response:
        """The response to a publish once its backend has answered."""
        exc = stored.exception()
        if isinstance(exc, OutcomeUnknown):
            error = HubError(
                504,
                f"the store did not confirm the event, which may have been stored and delivered: "
                f"{exc}; publishing it again with the same id is safe (without an id it may "
                "appear twice)",
                (("Retry-After", "1"),),
            )
            return error_response(error, keep_alive, cors)
        if exc is not None:
            error = HubError(503, f"the event was not stored: {exc}", (("Retry-After", "1"),))
            return error_response(error, keep_alive, cors)
        event_id = stored.result().id.encode("utf-8")
        return response(200, event_id, headers=(("Link", LINK), *cors), keep_alive=keep_alive)

    # -- subscribing ---------------------------------------------------------------------------

    def open_stream(
        self,
        request: Request,
        conn: Stream,
        write: Callable[[bytes], None] | None = None,
        frame: Frame | None = None,
    ) -> tuple[Subscriber, str | None, Preamble, float | None]:
        """Check a subscribe request; return the subscriber, its resume point, its preamble
        and the seconds until its token expires. Raises HubError (with CORS headers)."""
        cors = self.cors(request)
        try:
            return self._open_stream(request, conn, write, frame, cors)
        except HubError as error:
            self.count(error)
            raise HubError(error.status, error.reason, (*error.headers, *cors)) from None

    def _open_stream(
        self,
        request: Request,
        conn: Stream,
        write: Callable[[bytes], None] | None,
        frame: Frame | None,
        cors: Headers,
    ) -> tuple[Subscriber, str | None, Preamble, float | None]:
        headers = request.headers
        wanted = parse_subscribe(
            request.query, headers.get("last-event-id"), self.settings.max_topics
        )
        check_selectors(
            wanted.topics, self.settings.max_template_length, self.settings.max_template_expressions
        )
        found = self._token(request, wanted.authorization or "")
        claims = self.auth.subscriber(found, self.settings.anonymous)
        allowed = None
        if claims is not None and claims.subscribe is not None:
            allowed = frozenset(claims.subscribe)
        sub = Subscriber(conn, wanted.topics, allowed, write=write, frame=frame)
        requested = wanted.last_event_id
        first = encode_comment()
        if self.settings.retry is not None:
            first += b"retry: %d\n\n" % self.settings.retry

        def preamble(replay: Replay | None) -> tuple[list[tuple[str, str]], bytes]:
            stream_headers = [*_STREAM_HEADERS, *cors]
            gap = b""
            if requested is not None and replay is not None:
                stream_headers.append(("Last-Event-ID", requested if replay.found else EARLIEST))
                if not replay.found:
                    gap = gap_notice(requested, replay)
            return stream_headers, first + gap

        expires = None
        if claims is not None and claims.expires is not None:
            # Accepted within --jwt-leeway, so it lives as long: the leeway is clock skew.
            expires = max(0.0, claims.expires + self.settings.jwt_leeway - time.time())
        if self.subscriptions is not None:
            payload = claims.payload if claims is not None else None
            self._subscriber_ids[sub] = self.subscriptions.opened(wanted.topics, payload)
        return sub, requested, preamble, expires

    # -- the demo ------------------------------------------------------------------------------

    def _demo_tokens(self) -> tuple[str | None, str | None]:
        """Short-lived tokens for the demo page: a cookie that sees public updates and a
        publisher token for the demo topic only. Only HMAC secrets can mint them."""
        algorithm = self.settings.jwt_algorithm.split(",")[0].strip()
        if not algorithm.startswith("HS"):
            return None, None
        claims_exp = int(time.time()) + _DEMO_TOKEN_TTL

        def mint(key: str | None, mercure: dict[str, list[str]]) -> str | None:
            if key is None or key.startswith(("@", "http://", "https://", "-----BEGIN")):
                return None
            return jwt.encode({"mercure": mercure, "exp": claims_exp}, key, algorithm=algorithm)

        return (
            mint(self.settings.subscriber_jwt_key, {"subscribe": []}),
            mint(self.settings.publisher_jwt_key, {"publish": [DEMO_TOPIC]}),
        )

    def _demo_page(self, request: Request) -> Response:
        if self._page is None:
            self._page = resources.files("ssehub").joinpath("static/index.html").read_bytes()
        sub_token, publish_token = self._demo_tokens()
        cookie: Headers = ()
        if sub_token is not None:
            # The spec's way for browsers: a cookie set at discovery, scoped to the hub.
            name = self.settings.cookie_name
            secure = "; Secure" if self.settings.certfile else ""  # served over HTTPS only
            cookie = (
                (
                    "Set-Cookie",
                    f"{name}={sub_token}; Path={HUB_PATH}; HttpOnly; SameSite=Strict{secure}",
                ),
            )
        page = self._page.replace(b"{{PUBLISH_TOKEN}}", (publish_token or "").encode())
        return response(
            200,
            page,
            "text/html; charset=utf-8",
            headers=(("Link", LINK), ("Cache-Control", "no-store"), *cookie),
            keep_alive=request.keep_alive,
        )

    def clock_event(self, second: float) -> Event:
        """The demo's clock tick for one second of the server's time, on a topic of its own."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        return Event((CLOCK_TOPIC,), now, type="tick")
