"""Mercure's active subscriptions: events when a subscription starts and ends, and the
web API that lists them (``--subscriptions``).

Each subscription is told in its own dialect: a 0.x one (``topic=``) as a JSON-LD update on
``subscriptions/{topic}/{subscriber}``; a 1.0 one (``match=``) as plain JSON of SSE type
``mercure`` on ``subscriptions/{match_type}/{match}/{subscriber}``, as the 1.0 hub does."""

from __future__ import annotations

import asyncio
import itertools
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
MAX_LISTED = 10_000  # subscriptions one collection GET lists at most


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
    """Who is subscribed to what, announced as private updates on the hub itself.

    Indexed by topic and subscriber, so a lookup reads what it names and nothing else; a
    collection lists ``max_listed`` subscriptions at most (there may be max connections
    times max topics of them) and says how many it left out."""

    def __init__(self, hub: Hub, max_listed: int = MAX_LISTED) -> None:
        self.hub = hub
        self.max_listed = max_listed
        self.scanned = 0  # subscriptions read to answer API requests
        self._by_subscriber: dict[str, list[Active]] = {}
        self._by_topic: dict[str, dict[str, Active]] = {}
        self._count = 0

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
        for entry in entries:
            self._by_topic.setdefault(entry.topic, {})[subscriber] = entry
        self._count += len(entries)
        self._announce(entries, active=True)
        return subscriber

    def closed(self, subscriber: str) -> None:
        entries = self._by_subscriber.pop(subscriber, [])
        for entry in entries:
            of_topic = self._by_topic[entry.topic]
            del of_topic[subscriber]
            if not of_topic:
                del self._by_topic[entry.topic]
        self._count -= len(entries)
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
        last = self.hub.backend.last_id
        if len(parts) == 2:
            topic, subscriber = parts
            entry = self._by_topic.get(topic, {}).get(subscriber)
            self.scanned += entry is not None
            if entry is None or entry.matcher is not None:
                raise HubError(404, f"no active subscription of {subscriber!r} to {topic!r}")
            return {"@context": CONTEXT, **entry.document(), "lastEventID": last}
        if len(parts) > 2:
            raise HubError(404, f"no such subscriptions resource {path!r}")
        if parts:
            of_topic = self._by_topic.get(parts[0], {})
            chosen = (e for e in of_topic.values() if e.matcher is None)
        else:
            chosen = (
                e
                for of_topic in self._by_topic.values()
                for e in of_topic.values()
                if e.matcher is None
            )
        listed = [e.document() for e in itertools.islice(chosen, self.max_listed)]
        self.scanned += len(listed)
        doc: dict[str, object] = {
            "@context": CONTEXT,
            "id": path,
            "type": "Subscriptions",
            "lastEventID": last,
            "subscriptions": listed,
        }
        omitted = sum(1 for _ in chosen)  # counted, not built: the answer stays bounded
        if omitted:  # said, never silently cut: ask for one topic's
            doc["omitted"] = omitted
        return doc

    def _answer_1(self, path: str, parts: list[str]) -> dict[str, object]:
        last = self.hub.backend.last_id
        if len(parts) > 3:
            raise HubError(404, f"no such subscriptions resource {path[:200]!r}")
        if len(parts) == 3:
            match_type, match, subscriber = parts
            for entry in self._by_subscriber.get(subscriber, []):
                if entry.matcher == (match_type, match):
                    self.scanned += 1
                    return {**entry.document(), "last_event_id": last}
            raise HubError(404, f"no active {match_type} subscription of {subscriber!r}")
        wanted = tuple(parts)
        chosen = (
            e
            for entries in self._by_subscriber.values()
            for e in entries
            if e.matcher is not None and e.matcher[: len(wanted)] == wanted
        )
        listed = [e.document() for e in itertools.islice(chosen, self.max_listed)]
        self.scanned += len(listed)
        doc: dict[str, object] = {
            "id": path,
            "type": "Subscriptions",
            "last_event_id": last,
            "subscriptions": listed,
        }
        omitted = sum(1 for _ in chosen)  # counted, not built: the answer stays bounded
        if omitted:
            doc["omitted"] = omitted
        return doc
