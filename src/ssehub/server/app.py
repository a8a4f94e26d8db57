"""What the server does with a request: route, publish, open a stream, serve the demo."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

import jwt

from ..auth import COOKIE, Authenticator, find_token
from ..backends import EARLIEST, Replay
from ..errors import HubError
from ..events import Event, StoredEvent
from ..hub import Hub
from ..mercure import HUB_PATH, LINK, gap_notice, parse_publish, parse_subscribe, query_token
from ..settings import Settings
from ..sse import encode_comment
from ..subscriber import Subscriber
from .http import Request, error_response, head, response

if TYPE_CHECKING:
    from .protocol import HttpProtocol, Pending

CLOCK_TOPIC = "urn:ssehub:clock"
DEMO_TOPIC = "urn:ssehub:demo"
_DEMO_TOKEN_TTL = 24 * 3600

_STREAM_HEADERS = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0"),
    ("X-Accel-Buffering", "no"),
    ("Link", LINK),
]


class App:
    """The hub's HTTP face, shared by every connection of one server."""

    Preamble = Callable[[Replay | None], bytes]

    def __init__(self, settings: Settings, hub: Hub) -> None:
        self.settings = settings
        self.hub = hub
        self.auth = Authenticator(
            settings.publisher_jwt_key,
            settings.subscriber_jwt_key,
            settings.jwt_algorithm,
            hub.matcher,
        )
        self.connections: set[HttpProtocol] = set()
        self._page: bytes | None = None

    # -- routing -------------------------------------------------------------------------------

    def is_stream(self, request: Request) -> bool:
        return request.path == HUB_PATH and request.method == "GET"

    def handle(self, request: Request) -> Pending:
        """Answer a request that is not a stream: bytes now, or a future for a publish."""
        try:
            return self._route(request)
        except HubError as error:
            return error_response(error, request.keep_alive)

    def _route(self, request: Request) -> Pending:
        path, method = request.path, request.method
        if path == HUB_PATH:
            if method == "POST":
                return self._publish(request)
            raise HubError(
                405,
                f"{method} not allowed here: GET subscribes, POST publishes",
                (("Allow", "GET, POST"),),
            )
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                raise HubError(405, f"{method} not allowed on /healthz", (("Allow", "GET"),))
            return response(200, b"ok\n", keep_alive=request.keep_alive)
        if path == "/" and self.settings.demo:
            if method != "GET":
                raise HubError(405, f"{method} not allowed on the demo page", (("Allow", "GET"),))
            return self._demo_page(request)
        raise HubError(404, f"no such path {path!r}: the hub is at {HUB_PATH}")

    # -- publishing ----------------------------------------------------------------------------

    def _publish(self, request: Request) -> Pending:
        event = parse_publish(request.body, request.headers.get("content-type"))
        headers = request.headers
        found = find_token(
            headers.get("authorization"), query_token(request.query), headers.get("cookie")
        )
        self.auth.publisher(found, event.topics)
        return self.hub.publish(event)

    @staticmethod
    def published(answer: asyncio.Future[StoredEvent], keep_alive: bool) -> bytes:
        """The response to a publish once its backend has answered."""
        exc = answer.exception()
        if exc is not None:
            error = HubError(503, f"the event was not stored: {exc}", (("Retry-After", "1"),))
            return error_response(error, keep_alive)
        return response(
            200,
            answer.result().id.encode("utf-8"),
            headers=(("Link", LINK),),
            keep_alive=keep_alive,
        )

    # -- subscribing ---------------------------------------------------------------------------

    def open_stream(
        self, request: Request, conn: HttpProtocol
    ) -> tuple[Subscriber, str | None, Preamble, float | None]:
        """Check a subscribe request; return the subscriber, its resume point, its preamble
        and the seconds until its token expires."""
        headers = request.headers
        wanted = parse_subscribe(
            request.query, headers.get("last-event-id"), self.settings.max_topics
        )
        found = find_token(
            headers.get("authorization"), wanted.authorization, headers.get("cookie")
        )
        claims = self.auth.subscriber(found, self.settings.anonymous)
        allowed = None
        if claims is not None and claims.subscribe is not None:
            allowed = frozenset(claims.subscribe)
        assert conn.transport is not None
        sub = Subscriber(conn, wanted.topics, allowed, write=conn.transport.write)
        requested = wanted.last_event_id
        first = encode_comment()
        if self.settings.retry is not None:
            first += b"retry: %d\n\n" % self.settings.retry

        def preamble(replay: Replay | None) -> bytes:
            stream_headers = list(_STREAM_HEADERS)
            gap = b""
            if requested is not None and replay is not None:
                stream_headers.append(("Last-Event-ID", requested if replay.found else EARLIEST))
                if not replay.found:
                    gap = gap_notice(requested, replay)
            return head(200, stream_headers, None, keep_alive=False) + first + gap

        expires = None
        if claims is not None and claims.expires is not None:
            expires = max(0.0, claims.expires - time.time())
        return sub, requested, preamble, expires

    # -- the demo ------------------------------------------------------------------------------

    def _demo_page(self, request: Request) -> bytes:
        if self._page is None:
            self._page = resources.files("ssehub").joinpath("static/index.html").read_bytes()
        page = self._page
        cookie = []
        publish_token = ""
        now = int(time.time())
        if self.settings.subscriber_jwt_key is not None:
            # The spec's way for browsers: a cookie set at discovery. This one sees public
            # updates only (an empty mercure.subscribe).
            sub_token = jwt.encode(
                {"mercure": {"subscribe": []}, "exp": now + _DEMO_TOKEN_TTL},
                self.settings.subscriber_jwt_key,
                algorithm=self.settings.jwt_algorithm,
            )
            cookie = [
                ("Set-Cookie", f"{COOKIE}={sub_token}; Path={HUB_PATH}; HttpOnly; SameSite=Strict")
            ]
        if self.settings.publisher_jwt_key is not None:
            publish_token = jwt.encode(
                {"mercure": {"publish": [DEMO_TOPIC]}, "exp": now + _DEMO_TOKEN_TTL},
                self.settings.publisher_jwt_key,
                algorithm=self.settings.jwt_algorithm,
            )
        page = page.replace(b"{{PUBLISH_TOKEN}}", publish_token.encode())
        return response(
            200,
            page,
            "text/html; charset=utf-8",
            headers=(("Link", LINK), ("Cache-Control", "no-store"), *cookie),
            keep_alive=request.keep_alive,
        )

    def clock_event(self) -> Event:
        """The demo's clock tick: the server's time, on a topic of its own."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return Event((CLOCK_TOPIC,), now, type="tick")
