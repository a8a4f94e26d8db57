"""Views: subscribers that see exactly the same events, so one fan-out buffer serves them all;
and the set of views, indexed by their selectors for routing."""

from __future__ import annotations

import bisect
import enum
import logging
import sys
import time
from typing import Protocol

from .events import StoredEvent
from .routes import RouteIndex
from .subscriber import Phase, Subscriber, SubscriberClosed, ViewKey
from .topics import TopicMatcher

log = logging.getLogger("ssehub.hub")


_Chunk = tuple[int, bytes, int]  # where it starts in the view's stream, its bytes, its events


def _start(chunk: _Chunk) -> int:
    return chunk[0]


GONE = sys.maxsize  # the offset of a member that left: past any log's end, so never written


class Pass(enum.Enum):
    """How a ``View.flush`` ended."""

    DONE = "done"  # every live member has the whole log
    AGAIN = "again"  # the pass ended, but bytes arrived during it for members it had passed
    CUT = "cut"  # the deadline came first; the next flush goes on from where this one stopped


class Dropper(Protocol):
    """Who drops a member whose held bytes pass ``max_buffer`` (the hub)."""

    max_buffer: int

    def drop_slow(self, sub: Subscriber) -> None: ...


class View:
    """Subscribers with equal selectors and claims: they share one log of framed bytes.

    Appends go to the log; a *pass* walks the live members in order and writes each, in one
    ``write``, everything from its offset (``Subscriber.sent``) to the log's end. A pass may be
    cut into slices so the loop can read publishes meanwhile: what arrives before a slice is
    carried by the rest of the pass, and the members already written get it from the next
    pass. An event therefore waits for at most one pass, never for one pass to end and
    another to reach it. Members at the same offset share the same joined bytes.
    """

    __slots__ = (
        "_cursor",
        "_log",
        "_order",
        "_pass_end",
        "_stale",
        "allowed",
        "end",
        "frame",
        "live",
        "matcher",
        "selectors",
        "waiting",
    )

    def __init__(self, key: ViewKey, matcher: TopicMatcher) -> None:
        self.selectors, self.allowed, self.frame = key
        self.matcher = matcher
        self.live: dict[Subscriber, None] = {}
        self.waiting: dict[Subscriber, None] = {}  # replaying: live bytes are held for them
        self.end = 0  # bytes ever appended: the offset a member has when it has everything
        # What some live member still lacks: (start, bytes, events), oldest first.
        self._log: list[_Chunk] = []
        self._order: tuple[Subscriber, ...] = ()  # the live members of this pass, in order
        self._stale = False  # members changed since the pass began
        self._cursor = 0  # the next member of the pass in progress
        self._pass_end = 0  # the log's end when the pass in progress began

    def wants(self, event: StoredEvent) -> bool:
        """Whether this view's subscribers receive ``event`` (topics, then privacy)."""
        return self.matcher.match_any(self.selectors, event.topics) and (
            not event.private or self.may_see(event.topics)
        )

    def may_see(self, topics: tuple[str, ...]) -> bool:
        return self.allowed is not None and self.matcher.match_any(self.allowed, topics)

    def append(self, data: bytes, events: int, hub: Dropper) -> None:
        """Add ``data`` (``events`` events) for every member: live ones get it from the next
        ``flush``, replaying ones hold it now."""
        if self.frame is not None:
            data = self.frame(data)  # once for the view; held bytes are framed already
        if self.live:
            self._log.append((self.end, data, events))
        self.end += len(data)
        if self.waiting:
            for sub in tuple(self.waiting):
                sub.held.append(data)
                sub.held_size += len(data)
                if sub.held_size > hub.max_buffer:
                    log.info("dropping a subscriber whose replay fell behind the live stream")
                    hub.drop_slow(sub)

    def flush(self, deadline: float) -> tuple[Pass, int, int]:
        """Go on with the pass in progress until every live member is written or ``deadline``
        (``time.perf_counter``) passes. Returns how it ended, deliveries and bytes written."""
        end = self.end
        if self._cursor == 0:  # a new pass: with the members as they are now
            if self._stale:
                self._order, self._stale = tuple(self.live), False
            self._pass_end = end
        order = self._order
        shared: dict[int, tuple[bytes, int]] = {}
        at, count = self._cursor, len(order)
        deliveries = written = writes = 0
        while at < count:
            sub = order[at]
            at += 1
            sent = sub.sent
            if sent >= end:  # it has everything, or it left (GONE)
                continue
            got = shared.get(sent)
            if got is None:
                got = shared[sent] = self._since(sent)
            sub.sent = end
            sub.write(got[0])
            deliveries += got[1]
            written += len(got[0])
            writes += 1
            if not writes & 31 and time.perf_counter() >= deadline:
                break
        if at < count:
            self._cursor = at
            return Pass.CUT, deliveries, written
        self._cursor = 0
        if self._pass_end != self.end:
            # Every member now has the log up to where this pass began: what lies before it
            # is nobody's any more (under a steady stream no pass ever finds nothing new).
            del self._log[: bisect.bisect_left(self._log, self._pass_end, key=_start)]
            return Pass.AGAIN, deliveries, written
        self._log = []
        return Pass.DONE, deliveries, written

    def _since(self, offset: int) -> tuple[bytes, int]:
        """The log from ``offset`` (a chunk's start) to its end, and the events in it."""
        log = self._log
        first = bisect.bisect_left(log, offset, key=_start)
        if first == len(log) - 1:
            return log[first][1], log[first][2]
        rest = log[first:]
        return b"".join([data for _, data, _ in rest]), sum(events for _, _, events in rest)

    def changed(self) -> None:
        """Members came or went: the next pass takes them as they are. The pass under way
        goes on (who joined has everything so far; who left is ``GONE``) rather than begin
        again over every member for each connect or disconnect."""
        self._stale = True


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
            sub.sent = view.end  # what was appended while it replayed, it held
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
            sub.sent = GONE  # a pass under way may still hold it: never written again
            view.changed()
        elif was is Phase.REPLAYING:
            del view.waiting[sub]
        else:
            return
        self.subscribers -= 1
        if not view.live and not view.waiting:
            del self.by_key[sub.key]
            self.routes.remove(view)
