"""Mercure's active subscriptions: events when a subscription starts and ends, and the
JSON-LD web API that lists them (``--subscriptions``)."""

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
from .mercure import HUB_PATH

log = logging.getLogger("ssehub.subscriptions")

PREFIX = f"{HUB_PATH}/subscriptions"
CONTEXT = "https://mercure.rocks/"


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
    """Who is subscribed to what, announced as private updates on the hub itself."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._by_subscriber: dict[str, list[Active]] = {}

    def opened(self, topics: tuple[str, ...], payload: object) -> str:
        """Record a new subscriber; returns its id (an IRI)."""
        subscriber = f"urn:uuid:{uuid.uuid4()}"
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
            Event((entry.iri,), json.dumps({"@context": CONTEXT, **entry.document(active)}), True)
            for entry in entries
        ]
        if events:
            self.hub.announce(*events).add_done_callback(_logged)

    def answer(self, path: str) -> dict[str, object]:
        """The JSON-LD document for a GET on the subscriptions API (404 when unknown)."""
        rest = path[len(PREFIX) :].strip("/")
        parts = [unquote(p) for p in rest.split("/")] if rest else []
        everything = [e for entries in self._by_subscriber.values() for e in entries]
        last = self.hub.backend.last_id
        if len(parts) == 2:
            topic, subscriber = parts
            for entry in self._by_subscriber.get(subscriber, []):
                if entry.topic == topic:
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
