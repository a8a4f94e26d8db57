"""Views: subscribers that see exactly the same events, so one fan-out buffer serves them all;
and the set of views, indexed by their selectors for routing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from .events import StoredEvent
from .routes import RouteIndex
from .sse import HEARTBEAT
from .subscriber import Phase, Subscriber, SubscriberClosed, ViewKey
from .topics import TopicMatcher

log = logging.getLogger("ssehub.hub")


class _Dropper(Protocol):
    max_buffer: int

    def drop_slow(self, sub: Subscriber) -> None: ...


class View:
    """Subscribers with equal selectors and claims: they share one buffer per fan-out."""

    __slots__ = (
        "_writes",
        "allowed",
        "frame",
        "heartbeat",
        "live",
        "matcher",
        "selectors",
        "waiting",
    )

    def __init__(self, key: ViewKey, matcher: TopicMatcher) -> None:
        self.selectors, self.allowed, self.frame = key
        self.heartbeat = HEARTBEAT if self.frame is None else self.frame(HEARTBEAT)
        self.matcher = matcher
        self.live: dict[Subscriber, None] = {}
        self.waiting: dict[Subscriber, None] = {}  # replaying: live bytes are held for them
        self._writes: tuple[Callable[[bytes], None], ...] | None = None

    def wants(self, event: StoredEvent) -> bool:
        """Whether this view's subscribers receive ``event`` (topics, then privacy)."""
        return self.matcher.match_any(self.selectors, event.topics) and (
            not event.private or self.may_see(event.topics)
        )

    def may_see(self, topics: tuple[str, ...]) -> bool:
        return self.allowed is not None and self.matcher.match_any(self.allowed, topics)

    def send(self, data: bytes, hub: _Dropper) -> int:
        """Write ``data`` to every live member; hold it for replaying ones. Returns writes."""
        if self.frame is not None:
            data = self.frame(data)  # once for the view; held bytes are framed already
        writes = self._writes
        if writes is None:
            writes = self._writes = tuple(s.write for s in self.live)
        for write in writes:
            write(data)
        if self.waiting:
            for sub in tuple(self.waiting):
                sub.held.append(data)
                sub.held_size += len(data)
                if sub.held_size > hub.max_buffer:
                    log.info("dropping a subscriber whose replay fell behind the live stream")
                    hub.drop_slow(sub)
        return len(writes)

    def beat(self) -> None:
        heartbeat = self.heartbeat
        for sub in self.live:
            sub.write(heartbeat)

    def changed(self) -> None:
        self._writes = None


class Views:
    """Every view of one hub, by key and in the route index; moves subscribers between a
    view's ``waiting`` (replaying) and ``live`` members as their phase changes."""

    def __init__(self, matcher: TopicMatcher) -> None:
        self.matcher = matcher
        self.by_key: dict[ViewKey, View] = {}
        self.routes: RouteIndex[View] = RouteIndex(base=matcher.base)
        self.subscribers = 0

    def join(self, sub: Subscriber) -> View:
        """Register a new subscriber as replaying: live bytes are held for it."""
        if sub.phase is not Phase.NEW:
            raise SubscriberClosed(f"a {sub.phase.value} subscriber cannot subscribe again")
        view = self.by_key.get(sub.key)
        if view is None:
            view = self.by_key[sub.key] = View(sub.key, self.matcher)
            self.routes.add(view)
        sub.held, sub.held_size = [], 0
        sub.phase = Phase.REPLAYING
        view.waiting[sub] = None
        self.subscribers += 1
        return view

    def go_live(self, sub: Subscriber) -> None:
        """A replaying subscriber has caught up: the fan-out writes to it directly."""
        if sub.phase is Phase.REPLAYING:
            view = self.by_key[sub.key]
            del view.waiting[sub]
            sub.phase = Phase.LIVE
            view.live[sub] = None
            view.changed()

    def leave(self, sub: Subscriber) -> None:
        """Close ``sub``; safe to call more than once and from inside a fan-out."""
        was, sub.phase = sub.phase, Phase.CLOSED
        sub.held, sub.held_size = [], 0
        view = self.by_key.get(sub.key)
        if view is None:
            return
        if was is Phase.LIVE:
            del view.live[sub]
            view.changed()
        elif was is Phase.REPLAYING:
            del view.waiting[sub]
        else:
            return
        self.subscribers -= 1
        if not view.live and not view.waiting:
            del self.by_key[sub.key]
            self.routes.remove(view)
