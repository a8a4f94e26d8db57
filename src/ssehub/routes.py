"""Which views want an event's topics: an index of selectors and a bounded cache of answers.

The fan-out looks a topic set up in ``cached`` (one dict lookup per event) and computes it
once on a miss. Joins and leaves keep the answers right without clearing them: under
connect/disconnect churn a clear would make every publish try every template again.

- A view of exact topics only is added at once to the answers for its topics (a lookup).
- A view with a template or ``*`` could belong in any answer, and trying it against every
  cached topic would make each join cost as much as the cache is large. So the cached
  answers move aside as ``stale`` (correct but for the views joined since, ``added``), and
  the next publish to a stale topic set tries only those views before moving its answer back.
- A leaving view is taken out of exactly the answers that list it (an index of them).
- Once the cache is full, a topic set is cached (evicting the oldest) only the third time it
  misses: topics used once or twice, such as each subscription's events (``--subscriptions``:
  one at open, one at close), would otherwise push useful routes out. A bounded record of
  hashes counts the misses.
"""

from __future__ import annotations

from collections.abc import Hashable
from itertools import chain
from sys import getsizeof
from typing import Generic, Protocol, TypeVar

from .topics import ALL, DEFAULT_BASE, Pattern, Template, exact_topic, template

Topics = tuple[str, ...]

# What an answer holds besides its topics' strings, measured with tracemalloc (the route
# cost script in /tmp/histtempl/cost.py: ~55 B a route, ~245 a topic, ~56 a view), rounded
# up: per topic its entry in the index of answers by topic (a set of its own and a dict
# slot), ~25x a short topic's characters; per view a tuple slot and its entry in
# ``_routes_of``.
_PER_ROUTE = 128
_PER_TOPIC = 256
_PER_VIEW = 64


def _cost(topics: Topics) -> int:
    """Bytes an answer's key costs the cache: its strings, index entries and dict slots."""
    return _PER_ROUTE + sum(getsizeof(topic) + _PER_TOPIC for topic in topics)


class Routable(Hashable, Protocol):
    """What the index needs of a view: its topic selectors (hashed by identity)."""

    @property
    def selectors(self) -> frozenset[str]: ...


V = TypeVar("V", bound=Routable)


class RouteIndex(Generic[V]):
    """Views by selector kind, and the views of recently published topic sets.

    The answers (``cached`` and ``stale`` together) are bounded by count and by the bytes
    they hold (``_cost`` of each key and ``_PER_VIEW`` for each view listed: a topic can be
    as long as a publish body, and a publish may carry a thousand short ones), and evicted
    first-in first-out; into a full cache, a topic set is admitted on its ``admit_at``-th miss.
    """

    def __init__(
        self,
        max_routes: int = 10_000,
        max_bytes: int = 4 << 20,
        max_added: int = 64,
        base: str = DEFAULT_BASE,
        admit_at: int = 3,
    ) -> None:
        self.base = base  # the hub's URL: relative URL patterns and topics resolve against it
        self.admit_at = admit_at
        self._misses: dict[int, int] = {}  # hash of a topic set -> misses, while not cached
        self.max_added = max_added  # views a stale answer may need tried; past it, drop them
        self.max_routes = max_routes
        self.max_bytes = max_bytes
        self.cached: dict[Topics, tuple[V, ...]] = {}
        self.stale: dict[Topics, tuple[V, ...]] = {}  # right but for the views in ``added``
        self.added: dict[V, None] = {}  # template and * views joined since answers went stale
        self._bytes = 0
        self._exact: dict[str, set[V]] = {}
        # parsed once, while used
        self._templates: dict[str, tuple[Template | Pattern, set[V]]] = {}
        self._everything: set[V] = set()
        self._by_topic: dict[str, set[Topics]] = {}  # answers' keys holding each topic
        self._routes_of: dict[V, set[Topics]] = {}  # answers' keys listing each view
        self.recomputed = 0  # answers computed from the whole index (misses)
        self.refreshed = 0  # stale answers brought up to date by trying the added views
        self.evictions = 0
        self.declined = 0  # answers not cached: the cache was full and the topic set new

    def __len__(self) -> int:
        return len(self.cached) + len(self.stale)

    def route(self, topics: Topics) -> tuple[V, ...]:
        """The views wanting ``topics`` on a miss in ``cached``; the answer is cached."""
        found = self.stale.pop(topics, None)
        if found is not None:
            self.refreshed += 1
            for view in self.added:
                if view not in found and self._wants(view, topics):
                    found = (*found, view)
                    self._bytes += _PER_VIEW
                    self._routes_of.setdefault(view, set()).add(topics)
            self.cached[topics] = found
            if not self.stale:
                self.added.clear()
            self._shrink(topics)
            return found
        found = self.compute(topics)
        self.recomputed += 1
        size = _cost(topics) + _PER_VIEW * len(found)
        if size > self.max_bytes:
            return found
        full = len(self) >= self.max_routes or self._bytes + size > self.max_bytes
        if full and len(self) and not self._admitted(topics):
            self.declined += 1
            return found
        while len(self) and (len(self) >= self.max_routes or self._bytes + size > self.max_bytes):
            self._evict(next(iter(self.stale or self.cached)))
        self.cached[topics] = found
        self._bytes += size
        for topic in topics:
            self._by_topic.setdefault(topic, set()).add(topics)
        for view in found:
            self._routes_of.setdefault(view, set()).add(topics)
        return found

    def _admitted(self, topics: Topics) -> bool:
        """Whether ``topics`` has missed ``admit_at`` times, counting this one."""
        key = hash(topics)  # a collision only admits a topic set early
        misses = self._misses.pop(key, 0) + 1
        if misses >= self.admit_at:
            return True
        if len(self._misses) >= self.max_routes:
            del self._misses[next(iter(self._misses))]
        self._misses[key] = misses
        return False

    def compute(self, topics: Topics) -> tuple[V, ...]:
        """The views wanting ``topics``, from the index alone (no cache)."""
        found: set[V] = set(self._everything)
        for topic in topics:
            exact = self._exact.get(topic)
            if exact:
                found |= exact
        for parsed, views in self._templates.values():
            if any(parsed.matches(topic) for topic in topics):
                found |= views
        return tuple(found)

    def _wants(self, view: V, topics: Topics) -> bool:
        for selector in view.selectors:
            if selector == ALL:
                return True
            known = self._templates.get(selector)
            for topic in topics:
                if topic == exact_topic(selector) or (
                    known is not None and known[0].matches(topic)
                ):
                    return True
        return False

    def _evict(self, topics: Topics) -> None:
        views = self.stale.pop(topics, None)
        if views is None:
            views = self.cached.pop(topics)
        if not self.stale:
            self.added.clear()
        self._bytes -= _cost(topics) + _PER_VIEW * len(views)
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
        """Index a new view and see that the answers it belongs in will list it."""
        broad = False
        for selector in view.selectors:
            if selector == ALL:
                self._everything.add(view)
                broad = True
            elif selector in self._templates:
                self._templates[selector][1].add(view)
                broad = True
            elif (parsed := template(selector, self.base)) is not None:
                self._templates[selector] = (parsed, {view})
                broad = True
            else:
                self._exact.setdefault(exact_topic(selector), set()).add(view)
        if broad:
            if len(self.added) >= self.max_added:  # trying them all would cost as much as a miss
                while self.stale:
                    self._evict(next(iter(self.stale)))
            if self.cached:
                self.stale.update(self.cached)
                self.cached.clear()
            if self.stale:
                self.added[view] = None
            return
        keys: set[Topics] = set()
        for selector in view.selectors:
            keys |= self._by_topic.get(exact_topic(selector), set())
        if keys:
            self._routes_of[view] = keys
        for key in keys:
            answers = self.cached if key in self.cached else self.stale
            answers[key] = (*answers[key], view)
        self._bytes += _PER_VIEW * len(keys)
        self._shrink()

    def remove(self, view: V) -> None:
        """Forget a view, in the index and in every answer that lists it."""
        for selector in view.selectors:
            topic = exact_topic(selector)
            exact = self._exact.get(topic)
            if exact is not None:
                exact.discard(view)
                if not exact:
                    del self._exact[topic]
            found = self._templates.get(selector)
            if found is not None:
                found[1].discard(view)
                if not found[1]:
                    del self._templates[selector]
        self._everything.discard(view)
        self.added.pop(view, None)
        for key in self._routes_of.pop(view, ()):
            answers = self.cached if key in self.cached else self.stale
            answers[key] = tuple(v for v in answers[key] if v is not view)
            self._bytes -= _PER_VIEW

    def _shrink(self, keep: Topics | None = None) -> None:
        """Evict the oldest answers (never ``keep``) while views added to them hold more
        than the bound."""
        while self._bytes > self.max_bytes and len(self) > (keep is not None):
            oldest = next(iter(self.stale or self.cached))
            if oldest == keep:
                oldest = next(k for k in chain(self.stale, self.cached) if k != keep)
            self._evict(oldest)
