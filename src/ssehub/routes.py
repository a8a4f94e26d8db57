"""Which views want an event's topics: an index of selectors and a bounded cache of answers.

The fan-out looks a topic set up in ``cached`` (one dict lookup per event) and computes it
once on a miss. Joins and leaves update the cached answers in place, never clearing them:
under connect/disconnect churn a clear would make every publish try every template again.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from .topics import ALL, TopicMatcher, is_template

Topics = tuple[str, ...]


class Routable(Hashable, Protocol):
    """What the index needs of a view: its topic selectors (hashed by identity)."""

    @property
    def selectors(self) -> frozenset[str]: ...


V = TypeVar("V", bound=Routable)


class RouteIndex(Generic[V]):
    """Views by selector kind, and the views of recently published topic sets.

    The cache is bounded by entries and by the characters of its keys (a topic can be as
    long as a publish body), and evicts first-in first-out.
    """

    def __init__(
        self, matcher: TopicMatcher, max_routes: int = 10_000, max_chars: int = 4 << 20
    ) -> None:
        self.matcher = matcher
        self.max_routes = max_routes
        self.max_chars = max_chars
        self.cached: dict[Topics, tuple[V, ...]] = {}
        self._chars = 0
        self._exact: dict[str, set[V]] = {}
        self._templates: dict[str, set[V]] = {}
        self._everything: set[V] = set()
        self._by_topic: dict[str, set[Topics]] = {}  # cached keys holding each topic
        self._routes_of: dict[V, set[Topics]] = {}  # cached keys listing each view
        self.updates = 0  # cached answers changed by a join or a leave
        self.evictions = 0

    def route(self, topics: Topics) -> tuple[V, ...]:
        """The views wanting ``topics``, computed afresh and cached."""
        found = self.compute(topics)
        size = sum(map(len, topics))
        if size > self.max_chars:
            return found
        cached = self.cached
        while cached and (len(cached) >= self.max_routes or self._chars + size > self.max_chars):
            self._evict(next(iter(cached)))
        cached[topics] = found
        self._chars += size
        for topic in topics:
            self._by_topic.setdefault(topic, set()).add(topics)
        for view in found:
            self._routes_of.setdefault(view, set()).add(topics)
        return found

    def compute(self, topics: Topics) -> tuple[V, ...]:
        """The views wanting ``topics``, from the index alone (no cache)."""
        found: set[V] = set(self._everything)
        for topic in topics:
            exact = self._exact.get(topic)
            if exact:
                found |= exact
        test = self.matcher.test
        for selector, views in self._templates.items():
            if any(test(selector, topic) for topic in topics):
                found |= views
        return tuple(found)

    def _evict(self, topics: Topics) -> None:
        views = self.cached.pop(topics)
        self._chars -= sum(map(len, topics))
        self.evictions += 1
        for topic in topics:
            keys = self._by_topic[topic]
            keys.discard(topics)
            if not keys:
                del self._by_topic[topic]
        for view in views:
            keys = self._routes_of[view]
            keys.discard(topics)
            if not keys:
                del self._routes_of[view]

    def add(self, view: V) -> None:
        """Index a new view and add it to the cached answers it belongs in."""
        templates = []
        for selector in view.selectors:
            if selector == ALL:
                self._everything.add(view)
            elif is_template(selector):
                self._templates.setdefault(selector, set()).add(view)
                templates.append(selector)
            else:
                self._exact.setdefault(selector, set()).add(view)
        if ALL in view.selectors:
            keys: set[Topics] = set(self.cached)
        else:
            keys = set()
            by_topic = self._by_topic
            for selector in view.selectors:
                keys |= by_topic.get(selector, set())
            if templates:
                test = self.matcher.test
                for topic, holders in by_topic.items():
                    if any(test(selector, topic) for selector in templates):
                        keys |= holders
        if not keys:
            return
        cached = self.cached
        for key in keys:
            cached[key] = (*cached[key], view)
        self._routes_of[view] = keys
        self.updates += len(keys)

    def remove(self, view: V) -> None:
        """Forget a view, in the index and in every cached answer that lists it."""
        for selector in view.selectors:
            for index in (self._exact, self._templates):
                views = index.get(selector)
                if views is not None:
                    views.discard(view)
                    if not views:
                        del index[selector]
        self._everything.discard(view)
        keys = self._routes_of.pop(view, ())
        cached = self.cached
        for key in keys:
            cached[key] = tuple(v for v in cached[key] if v is not view)
        self.updates += len(keys)

    def __len__(self) -> int:
        return len(self.cached)
