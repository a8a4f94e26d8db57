"""Mercure's active subscriptions: events when a subscription starts and ends, and the
JSON-LD web API that lists them (``--subscriptions``)."""

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
from .mercure import HUB_PATH

log = logging.getLogger("ssehub.subscriptions")

PREFIX = f"{HUB_PATH}/subscriptions"
CONTEXT = "https://mercure.rocks/"
MAX_LISTED = 10_000  # subscriptions one collection GET lists at most


@dataclass(frozen=True, slots=True)
class Active:
    """One subscription: a topic selector of one subscriber."""

    topic: str
    subscriber: str
    payload: object

    @property
    def iri(self) -> str:
        return f"{PREFIX}/{quote(self.topic, safe='')}/{quote(self.subscriber, safe='')}"

    def document(self, active: bool = True) -> dict[str, object]:
        doc: dict[str, object] = {
            "id": self.iri,
            "type": "Subscription",
            "topic": self.topic,
            "subscriber": self.subscriber,
            "active": active,
        }
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

    def opened(self, topics: tuple[str, ...], payload: object) -> str:
        """Record a new subscriber; returns its id (an IRI)."""
        subscriber = f"urn:uuid:{uuid.uuid4()}"
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
            Event((entry.iri,), json.dumps({"@context": CONTEXT, **entry.document(active)}), True)
            for entry in entries
        ]
        if events:
            self.hub.announce(*events).add_done_callback(_logged)

    def answer(self, path: str) -> dict[str, object]:
        """The JSON-LD document for a GET on the subscriptions API (404 when unknown)."""
        rest = path[len(PREFIX) :].strip("/")
        parts = [unquote(p) for p in rest.split("/")] if rest else []
        last = self.hub.backend.last_id
        if len(parts) == 2:
            topic, subscriber = parts
            entry = self._by_topic.get(topic, {}).get(subscriber)
            self.scanned += entry is not None
            if entry is None:
                raise HubError(404, f"no active subscription of {subscriber!r} to {topic!r}")
            return {"@context": CONTEXT, **entry.document(), "lastEventID": last}
        if len(parts) > 2:
            raise HubError(404, f"no such subscriptions resource {path!r}")
        if parts:
            of_topic = self._by_topic.get(parts[0], {})
            total, chosen = len(of_topic), iter(of_topic.values())
        else:
            total = self._count
            chosen = (e for of_topic in self._by_topic.values() for e in of_topic.values())
        listed = [e.document() for e in itertools.islice(chosen, self.max_listed)]
        self.scanned += len(listed)
        doc: dict[str, object] = {
            "@context": CONTEXT,
            "id": path,
            "type": "Subscriptions",
            "lastEventID": last,
            "subscriptions": listed,
        }
        if total > len(listed):  # said, never silently cut: ask for one topic's
            doc["omitted"] = total - len(listed)
        return doc
