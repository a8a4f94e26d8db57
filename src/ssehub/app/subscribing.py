"""Subscribing: a subscribe request's query, token and budgets, up to its ``OpenedStream``;
and what a stream's end gives back."""

from __future__ import annotations

import time

from .. import dialects
from ..auth import DIALECT_1, Authenticator
from ..errors import HubError
from ..hub import Hub
from ..mercure import RESUMED_HEADER, Subscription, parse_subscribe
from ..settings import Settings
from ..sse import encode_comment
from ..subscriber import Subscriber
from ..subscriptions import Subscriptions
from ..tokens import unauthorized
from ..topics import check_matchers, check_selectors
from .answers import Headers, Request
from .streams import OpenedStream

_WANTED_KEPT = 1024  # parsed subscribe queries kept
_WANTED_SMALL = 2048  # characters: a longer query is parsed every time (the cache stays small)


class Subscribing:
    """Opens subscribers' streams for the app, and closes their accounts when they end."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        auth: Authenticator,
        subscriptions: Subscriptions | None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.auth = auth
        self.subscriptions = subscriptions
        self._subscriber_ids: dict[Subscriber, str] = {}
        self._template_costs: dict[Subscriber, tuple[str, int]] = {}  # owner, expressions
        self._wanted_cache: dict[tuple[str, str | None], tuple[Subscription, int]] = {}

    def open(self, request: Request, cors: Headers) -> OpenedStream:
        """The stream a subscribe asks for, or the refusal (``HubError``) saying why not."""
        headers = request.headers
        settings = self.settings
        wanted, cost = self._wanted(request.query, headers.get("last-event-id"))
        found = dialects.find(settings, headers, request.query, wanted.dialect)
        if found is None and wanted.dialect == DIALECT_1 and not settings.anonymous:
            raise unauthorized(
                "no token: this hub does not allow anonymous subscribers; send "
                f"'Authorization: Bearer <access token>' or the {settings.access_cookie_name} "
                "cookie",
                None,
            )
        resource = dialects.resources(settings, headers)
        claims = self.auth.subscriber(found, settings.anonymous, resource=resource)
        dialects.settle(settings, claims, found, wanted.dialect)
        owner = request.client if cost else None
        budget = self.hub.template_budget
        if owner is not None and not budget.fits(owner, cost):
            raise HubError(
                429,
                f"too many template expressions from {owner}: its subscriptions hold"
                f" {budget.used(owner)}, this one {cost}, at most {budget.limit} in all"
                " (--max-template-expressions-per-address)",
                (("Retry-After", "1"),),
            )
        allowed = None
        if claims is not None and claims.subscribe is not None:
            allowed = frozenset(claims.subscribe)
        first = encode_comment()
        if self.settings.retry is not None:
            first += b"retry: %d\n\n" % self.settings.retry
        expires = None
        if claims is not None and claims.expires is not None:
            # Accepted within --jwt-leeway, so it lives as long: the leeway is clock skew.
            expires = max(0.0, claims.expires + settings.jwt_leeway - time.time())

        def opened(sub: Subscriber) -> None:
            if owner is not None:  # right after the check: no other subscribe came between
                budget.take(owner, cost)
                self._template_costs[sub] = (owner, cost)
            if self.subscriptions is not None:
                payload = claims.payload if claims is not None else None
                self._subscriber_ids[sub] = self.subscriptions.opened(
                    wanted.topics, payload, wanted.matchers
                )

        return OpenedStream(
            wanted.topics,
            allowed,
            wanted.last_event_id,
            expires,
            cors,
            first,
            opened,
            RESUMED_HEADER[wanted.dialect],
        )

    def _wanted(self, query: str, last_event_id: str | None) -> tuple[Subscription, int]:
        """The subscription a query asks for and its template expressions (1.0 matchers have
        none), or the 400 saying why not. A pure function of its arguments and the settings,
        so kept: every tab of a page, every stream of a load, asks the same."""
        key = (query, last_event_id)
        found = self._wanted_cache.get(key)
        if found is not None:
            return found
        settings = self.settings
        wanted = parse_subscribe(query, last_event_id, settings.max_topics, settings.dialects)
        cost = 0
        if wanted.dialect == DIALECT_1:
            base = dialects.base_url(settings)
            check_matchers(wanted.matchers, settings.max_template_length, base)
        else:
            cost = check_selectors(
                wanted.topics, settings.max_template_length, settings.max_template_expressions
            )
        found = wanted, cost
        if len(query) + len(last_event_id or "") <= _WANTED_SMALL:
            if len(self._wanted_cache) >= _WANTED_KEPT:
                self._wanted_cache.clear()
            self._wanted_cache[key] = found
        return found

    def closed(self, sub: Subscriber) -> None:
        """A stream ended: give its template expressions back, announce its end."""
        charged = self._template_costs.pop(sub, None)
        if charged is not None:
            self.hub.template_budget.give(*charged)
        subscriber = self._subscriber_ids.pop(sub, None)
        if subscriber is not None and self.subscriptions is not None:
            self.subscriptions.closed(subscriber)
