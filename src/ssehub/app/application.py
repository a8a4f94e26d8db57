"""The hub's application, shared by both faces: routing, auth, publish, subscribe, metrics.

It answers a ``Request`` with a typed answer (``Response``, ``DeferredPublish`` or
``OpenedStream``) and knows nothing of sockets, HTTP/1.1 framing or ASGI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import dialects
from ..auth import DIALECT_1, Authenticator
from ..commits import HubBusy
from ..contract import HistoryUnavailable, InvalidEvent
from ..errors import HubError
from ..hub import Hub
from ..mercure import (
    HUB_PATH,
    METADATA_PATH,
    check_publish_1,
    parse_publish,
    protected_resource_metadata,
)
from ..metrics import CONTENT_TYPE, Metrics
from ..settings import Settings
from ..subscriber import Subscriber
from ..subscriptions import PREFIX as SUBSCRIPTIONS
from ..subscriptions import Subscriptions
from ..tokens import Carrier, forbidden
from .answers import DeferredPublish, Headers, Request, Response, error_response, response
from .cors import Cors
from .demo import DemoPage
from .streams import OpenedStream
from .subscribing import Subscribing

log = logging.getLogger("ssehub.app")

Answer = Response | DeferredPublish | OpenedStream
_Handler = Callable[[Request, Headers], Answer]


@dataclass(frozen=True, slots=True)
class _Route:
    """The methods one path answers, and where a 405 says the method is not allowed."""

    where: str  # "on {path}", "here: ..."
    methods: Mapping[str, _Handler]

    @property
    def allow(self) -> str:
        return ", ".join(self.methods)


class App:
    """The hub's face-neutral application; one per hub, shared by every connection."""

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
        self.cors = Cors(settings.cors_origins, settings.publish_origins)
        self.rejections = {401: 0, 403: 0}
        self.subscriptions = Subscriptions(hub) if settings.subscriptions else None
        self.subscribing = Subscribing(settings, hub, self.auth, self.subscriptions)
        self.open_connections: Callable[[], int] | None = None  # set by a face that counts
        self.metrics = Metrics(hub, self._extra_metrics)
        self._demo = DemoPage(settings)
        health = _Route("on {path}", {"GET": self._ok, "HEAD": self._ok})
        self._routes: dict[str, _Route] = {
            HUB_PATH: _Route(
                "here: GET subscribes, POST publishes",
                {"GET": self.subscribing.open, "POST": self._publish, "OPTIONS": self._preflight},
            ),
            "/metrics": _Route("on {path}", {"GET": self._metrics, "HEAD": self._metrics}),
            "/healthz": health,
            "/readyz": health,
        }
        if DIALECT_1 in settings.dialects and (
            settings.publisher_jwt_key or settings.subscriber_jwt_key
        ):  # RFC 9728 metadata, when 1.0 is served and the hub verifies tokens at all
            metadata = {"GET": self._metadata, "HEAD": self._metadata}
            self._routes[METADATA_PATH] = _Route("on {path}", metadata)
        if settings.demo:
            page = {"GET": self._demo_page, "HEAD": self._demo_page}
            self._routes["/"] = _Route("on the demo page", page)
        api = {"GET": self._subscriptions_api, "HEAD": self._subscriptions_api}
        self._subscriptions_route = _Route("on the subscriptions API", api)

    async def close(self) -> None:
        """Stop the engine: publishes in flight finish, the backend closes."""
        await self.hub.close()

    # -- routing -------------------------------------------------------------------------------

    def is_stream(self, request: Request) -> bool:
        """Whether ``request`` opens a stream (a face orders it after earlier answers)."""
        return request.path == HUB_PATH and request.method == "GET"

    def handle(self, request: Request) -> Answer:
        """Answer ``request``; a refusal is a ``Response`` with its status and reason."""
        cors = self.cors.headers(request)
        answer: Answer
        try:
            route = self._route(request)
            answer = route.methods.get(request.method, self._not_allowed)(request, cors)
        except HubError as error:
            self.count(error)
            stream = self.is_stream(request)
            if dialects.speaks_1(self.settings, request.headers, request.query, stream):
                error = dialects.with_metadata(error, self.settings, request.headers)
            answer = error_response(error, cors)
        except InvalidEvent as exc:  # an in-process rule the form parser did not cover
            answer = error_response(HubError(400, str(exc)), cors)
        except HubBusy as exc:  # the store is slow: publishers back off rather than pile up
            answer = error_response(HubError(503, str(exc), (("Retry-After", "1"),)), cors)
        except Exception:  # a fault of the hub's own: said, logged, and the connection lives on
            log.exception("answering %s %s failed", request.method, request.path)
            fault = HubError(500, "the hub failed to answer this request; its log says why")
            answer = error_response(fault, cors)
        if request.method == "HEAD" and isinstance(answer, Response):
            answer.bodiless = True  # every answer to a HEAD, refusals too: no body on the wire
        return answer

    def unavailable(self, exc: HistoryUnavailable, opened: OpenedStream) -> Response:
        """The answer to a stream whose history could not be read (before its head)."""
        return error_response(HubError(503, str(exc), (("Retry-After", "1"),)), opened.cors)

    def failed(self, opened: OpenedStream) -> Response:
        """The answer to a stream that failed before its head for a reason of the hub's own
        (the face logs the traceback)."""
        error = HubError(500, "the hub failed to open this stream; its log says why")
        return error_response(error, opened.cors)

    def _route(self, request: Request) -> _Route:
        path = request.path
        route = self._routes.get(path)
        if route is not None:
            return route
        if self.subscriptions is not None and path.startswith(SUBSCRIPTIONS):
            return self._subscriptions_route
        raise HubError(404, f"no such path {path!r}: the hub is at {HUB_PATH}")

    def _not_allowed(self, request: Request, cors: Headers) -> Answer:
        route = self._route(request)
        where = route.where.format(path=request.path)
        raise HubError(405, f"{request.method} not allowed {where}", (("Allow", route.allow),))

    def count(self, error: HubError) -> None:
        """Auth refusals, for the metrics."""
        if error.status in self.rejections:
            self.rejections[error.status] += 1

    # -- the answers ---------------------------------------------------------------------------

    def _ok(self, request: Request, cors: Headers) -> Response:
        return response(200, b"ok\n")

    def _metrics(self, request: Request, cors: Headers) -> Response:
        return response(200, self.metrics.render(), CONTENT_TYPE)

    def _demo_page(self, request: Request, cors: Headers) -> Response:
        return self._demo.render()

    def _preflight(self, request: Request, cors: Headers) -> Response:
        return self.cors.preflight(request, cors, self._routes[HUB_PATH].allow)

    def _metadata(self, request: Request, cors: Headers) -> Response:
        found = dialects.resources(self.settings, request.headers)
        if not found:
            raise HubError(400, "no Host header: set --resource to name the hub's URL")
        document = protected_resource_metadata(found[0], self.settings.access_cookie_name)
        return response(200, json.dumps(document).encode(), "application/json", headers=cors)

    def _publish(self, request: Request, cors: Headers) -> DeferredPublish:
        settings = self.settings
        event = parse_publish(request.body, request.headers.get("content-type"))
        found = dialects.find(settings, request.headers, request.query, None)
        if found is not None and found.carrier is Carrier.COOKIE:
            self.cors.check_cookie_publish(request)
        resource = dialects.resources(settings, request.headers)
        claims = self.auth.publisher(found, event.topics, resource=resource)
        if dialects.settle(settings, claims, found, None) == DIALECT_1:
            check_publish_1(event, dialects.base_url(settings))
        longest = max(map(len, event.topics))
        if longest > self.settings.max_topic_length:
            raise HubError(
                400,
                f"topic too long: {longest} characters, at most {self.settings.max_topic_length}"
                " (--max-topic-length)",
            )
        return DeferredPublish(self.hub.publish(event), cors)

    def stream_closed(self, sub: Subscriber) -> None:
        """A stream ended: its template budget comes back, its subscriptions end."""
        self.subscribing.closed(sub)

    def _subscriptions_api(self, request: Request, cors: Headers) -> Response:
        """The subscriptions API; the URL must match one of the token's subscribe selectors.
        A 1.0 access token gets the 1.0 subscriptions as plain JSON, a 0.x one JSON-LD."""
        assert self.subscriptions is not None
        found = dialects.find(self.settings, request.headers, request.query, None)
        resource = dialects.resources(self.settings, request.headers)
        claims = self.auth.subscriber(found, anonymous=False, resource=resource)
        assert claims is not None
        dialect = dialects.settle(self.settings, claims, found, None)
        selectors = claims.subscribe or ()
        if not any(self.hub.matcher.match(s, request.path) for s in selectors):
            grant = "a subscribe grant" if dialect == DIALECT_1 else "mercure.subscribe"
            raise forbidden(f"{grant} does not cover {request.path!r}")
        body = json.dumps(self.subscriptions.answer(request.path, dialect)).encode()
        media = "application/json" if dialect == DIALECT_1 else "application/ld+json"
        return response(200, body, media, headers=cors)

    # -- metrics -------------------------------------------------------------------------------

    def _extra_metrics(self) -> Iterator[Metric]:
        if self.open_connections is not None:
            yield GaugeMetricFamily(
                "ssehub_connections", "Open client connections.", value=self.open_connections()
            )
        family = CounterMetricFamily(
            "ssehub_auth_rejections", "Requests refused by auth.", labels=["status"]
        )
        for status, count in self.rejections.items():
            family.add_metric([str(status)], count)
        yield family
