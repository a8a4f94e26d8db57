"""Mercure's active subscriptions: events when a subscription starts and ends, and the
web API that lists them (``--subscriptions``).

Each subscription is told in its own dialect: a 0.x one (``topic=``) as a JSON-LD update on
``subscriptions/{topic}/{subscriber}``; a 1.0 one (``match=``) as plain JSON of SSE type
``mercure`` on ``subscriptions/{match_type}/{match}/{subscriber}``, as the 1.0 hub does."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from urllib.parse import quote, unquote

from .errors import HubError
from .events import Event, StoredEvent
from .hub import Hub
from .mercure import DIALECT_0, DIALECT_1, HUB_PATH

log = logging.getLogger("ssehub.subscriptions")

PREFIX = f"{HUB_PATH}/subscriptions"
CONTEXT = "https://mercure.rocks/"
EVENT_TYPE_1 = "mercure"  # the SSE event type of 1.0 subscription events


@dataclass(frozen=True, slots=True)
class Active:
    """One subscription: a topic selector of one subscriber."""

    topic: str
    subscriber: str
    payload: object
    matcher: tuple[str, str] | None = None  # (match_type, match) of a 1.0 subscription

    @property
    def iri(self) -> str:
        subscriber = quote(self.subscriber, safe="")
        if self.matcher is not None:
            match_type, match = self.matcher
            return f"{PREFIX}/{match_type}/{quote(match, safe='')}/{subscriber}"
        return f"{PREFIX}/{quote(self.topic, safe='')}/{subscriber}"

    def document(self, active: bool = True) -> dict[str, object]:
        doc: dict[str, object] = {"id": self.iri, "type": "Subscription"}
        if self.matcher is not None:
            doc["match_type"], doc["match"] = self.matcher
        else:
            doc["topic"] = self.topic
        doc["subscriber"] = self.subscriber
        doc["active"] = active
        if self.payload is not None:
            doc["payload"] = self.payload
        return doc


def _logged(sent: asyncio.Future[list[StoredEvent]]) -> None:
    if not sent.cancelled() and sent.exception() is not None:
        log.warning("a subscription event was not delivered: %s", sent.exception())


class Subscriptions:
    """Who is subscribed to what, announced as private updates on the hub itself."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._by_subscriber: dict[str, list[Active]] = {}

    def opened(
        self,
        topics: tuple[str, ...],
        payload: object,
        matchers: tuple[tuple[str, str], ...] = (),
    ) -> str:
        """Record a new subscriber; returns its id (an IRI). ``matchers`` (1.0) pair up
        with ``topics``, the engine's selectors made of them."""
        subscriber = f"urn:uuid:{uuid.uuid4()}"
        if matchers:
            entries = [
                Active(t, subscriber, payload, m) for t, m in zip(topics, matchers, strict=True)
            ]
        else:
            entries = [Active(t, subscriber, payload) for t in topics]
        self._by_subscriber[subscriber] = entries
        self._announce(entries, active=True)
        return subscriber

    def closed(self, subscriber: str) -> None:
        entries = self._by_subscriber.pop(subscriber, [])
        self._announce(entries, active=False)

    def _announce(self, entries: list[Active], active: bool) -> None:
        # Live only, never in history: connection churn must not evict other topics' events.
        events = [
            Event((entry.iri,), json.dumps(entry.document(active)), True, type=EVENT_TYPE_1)
            if entry.matcher is not None
            else Event(
                (entry.iri,), json.dumps({"@context": CONTEXT, **entry.document(active)}), True
            )
            for entry in entries
        ]
        if events:
            self.hub.announce(*events).add_done_callback(_logged)

    def answer(self, path: str, dialect: str = DIALECT_0) -> dict[str, object]:
        """The document for a GET on the subscriptions API (404 when unknown): JSON-LD of
        the 0.x subscriptions, or plain JSON of the 1.0 ones."""
        rest = path[len(PREFIX) :].strip("/")
        parts = [unquote(p) for p in rest.split("/")] if rest else []
        if dialect == DIALECT_1:
            return self._answer_1(path, parts)
        everything = [
            e for entries in self._by_subscriber.values() for e in entries if e.matcher is None
        ]
        last = self.hub.backend.last_id
        if len(parts) == 2:
            topic, subscriber = parts
            for entry in self._by_subscriber.get(subscriber, []):
                if entry.matcher is None and entry.topic == topic:
                    return {"@context": CONTEXT, **entry.document(), "lastEventID": last}
            raise HubError(404, f"no active subscription of {subscriber!r} to {topic!r}")
        if len(parts) > 2:
            raise HubError(404, f"no such subscriptions resource {path!r}")
        chosen = [e for e in everything if not parts or e.topic == parts[0]]
        return {
            "@context": CONTEXT,
            "id": path,
            "type": "Subscriptions",
            "lastEventID": last,
            "subscriptions": [e.document() for e in chosen],
        }

    def _answer_1(self, path: str, parts: list[str]) -> dict[str, object]:
        everything = [e for entries in self._by_subscriber.values() for e in entries if e.matcher]
        last = self.hub.backend.last_id
        if len(parts) > 3:
            raise HubError(404, f"no such subscriptions resource {path[:200]!r}")
        if len(parts) == 3:
            match_type, match, subscriber = parts
            for entry in self._by_subscriber.get(subscriber, []):
                if entry.matcher == (match_type, match):
                    return {**entry.document(), "last_event_id": last}
            raise HubError(404, f"no active {match_type} subscription of {subscriber!r}")
        chosen = [
            e
            for e in everything
            if e.matcher is not None and e.matcher[: len(parts)] == tuple(parts)
        ]
        return {
            "id": path,
            "type": "Subscriptions",
            "last_event_id": last,
            "subscriptions": [e.document() for e in chosen],
        }
