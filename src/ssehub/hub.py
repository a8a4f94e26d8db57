"""The engine: publish batching, the subscription index, fan-out, replay and backpressure.

Hot path (``_deliver``): events arrive from the backend in batches; each matching *view*
(subscribers with the same selectors and claims) gets the batch's bytes joined once, and every
member's transport gets those same bytes in one ``write``. No task, queue or await per
subscriber; a member whose unsent bytes pass the bound is dropped by its face (see
``server``), never slowing the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from .commits import CommitChain
from .contract import Backend, HistoryUnavailable, Replay
from .events import Event, StoredEvent
from .settings import DEFAULTS
from .sse import HEARTBEAT
from .subscriber import Phase, Subscriber, SubscriberClosed, ViewKey
from .topics import ALL, TopicMatcher, is_template

log = logging.getLogger("ssehub.hub")

_REPLAY_CHUNK = 64 * 1024
_IMMEDIATE = 0.0005  # a fan-out cheaper than this never waits for company
_OUTBOX_MAX = 4096  # events gathered for one fan-out at most
_ROUTE_CACHE_MAX = 10_000

Preamble = Callable[[Replay | None], bytes]
"""Builds the first bytes of a stream (HTTP head, first comment, gap notice) once the
replay is known, since the response's Last-Event-ID header depends on it."""


class _View:
    """Subscribers that see exactly the same events, so they can share one buffer."""

    __slots__ = ("_writes", "allowed", "live", "matcher", "selectors", "waiting")

    def __init__(self, key: ViewKey, matcher: TopicMatcher) -> None:
        self.selectors, self.allowed = key
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

    def send(self, data: bytes, hub: Hub) -> int:
        """Write ``data`` to every live member; hold it for replaying ones. Returns writes."""
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
        for sub in self.live:
            sub.write(HEARTBEAT)

    def changed(self) -> None:
        self._writes = None


class Hub:
    """Publishes through a backend and fans its events out to subscribers.

    One Hub per event loop; the server, the ASGI app and in-process code share it.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        heartbeat: float = DEFAULTS.heartbeat,
        max_buffer: int = DEFAULTS.max_write_buffer,
        matcher: TopicMatcher | None = None,
        max_coalesce: float = 0.005,
    ) -> None:
        self.backend = backend
        self.heartbeat = heartbeat
        self.max_buffer = max_buffer
        self.matcher = matcher or TopicMatcher()
        self.deliveries = 0
        self.bytes_written = 0
        self.subscriptions_total = 0
        self.slow_dropped = 0
        self._commits: CommitChain | None = None
        self._on_append: Callable[[float], None] | None = None
        self._views: dict[ViewKey, _View] = {}
        self._exact: dict[str, set[_View]] = {}
        self._templates: dict[str, set[_View]] = {}
        self._everything: set[_View] = set()
        self._routes: dict[tuple[str, ...], tuple[_View, ...]] = {}
        self._dispatched = 0
        self.max_coalesce = max_coalesce
        self._outbox: list[StoredEvent] = []
        self._flush_handle: asyncio.Handle | None = None
        self._last_cost = 0.0
        self._last_end = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._beat_handle: asyncio.TimerHandle | None = None
        self._subscribers = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop and start following the backend."""
        self._loop = asyncio.get_running_loop()
        self._commits = CommitChain(self.backend, self._loop)
        self._commits.on_append = self._on_append
        self._dispatched = await self.backend.start(self._deliver)
        if self.heartbeat > 0:
            self._beat_handle = self._loop.call_later(self.heartbeat, self._beat)

    async def close(self) -> None:
        """Stop heartbeats, wait for publishes in flight, close the backend."""
        if self._beat_handle is not None:
            self._beat_handle.cancel()
        if self._commits is not None:
            await self._commits.wait_idle()
        if self._flush_handle is not None:  # what was acknowledged goes out before we stop
            self._flush_handle.cancel()
            self._flush()
        await self.backend.close()

    @property
    def subscriber_count(self) -> int:
        return self._subscribers

    # -- publishing --------------------------------------------------------------------------

    @property
    def published(self) -> int:
        """Events the backend has accepted."""
        return self._commits.published if self._commits is not None else 0

    @property
    def publish_failures(self) -> int:
        """Publishes the backend refused (each publisher heard why)."""
        return self._commits.failures if self._commits is not None else 0

    @property
    def on_append(self) -> Callable[[float], None] | None:
        """Called with the seconds each batch append took (e.g. a latency histogram)."""
        return self._on_append

    @on_append.setter
    def on_append(self, observe: Callable[[float], None] | None) -> None:
        self._on_append = observe
        if self._commits is not None:
            self._commits.on_append = observe

    def publish(self, event: Event) -> asyncio.Future[StoredEvent]:
        """Queue ``event``; the future resolves once the backend has accepted it.

        Publishes of one loop iteration go to the backend as one batch (one transaction on
        durable backends); a batch waits for the previous one, which keeps publish order.
        """
        if self._commits is None:
            raise RuntimeError("Hub.start() has not been awaited")
        return self._commits.publish(event)

    # -- fan-out -----------------------------------------------------------------------------

    def _deliver(self, events: Sequence[StoredEvent]) -> None:
        """The backend's sink: gather events for the next fan-out.

        A fan-out costs one write per subscriber however many events it carries, so when the
        last one took a while and ended only just now, the next waits until as long again has
        passed (at most ``max_coalesce``) and carries what arrived meanwhile. With few
        subscribers, or a slow trickle of events, it runs at once; with many subscribers and
        a steady rate it keeps the writes per second, and so the latency, bounded."""
        if not events:
            return
        self._outbox.extend(events)
        if len(self._outbox) >= _OUTBOX_MAX and self._flush_handle is not None:
            self._flush_handle.cancel()  # enough company: go now rather than wait
            self._flush_handle = None
            self._flush()
            return
        if self._flush_handle is None:
            assert self._loop is not None
            # Wait only while the previous fan-out is recent: at a low rate there is nobody
            # to gather, and waiting would be pure latency.
            delay = min(self._last_end + self._last_cost - self._loop.time(), self.max_coalesce)
            if delay < _IMMEDIATE:
                self._flush_handle = self._loop.call_soon(self._flush)
            else:
                self._flush_handle = self._loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        events, self._outbox = self._outbox, []
        started = time.perf_counter()
        self._fan_out(events)
        self._last_cost = time.perf_counter() - started
        assert self._loop is not None
        self._last_end = self._loop.time()

    def _fan_out(self, events: Sequence[StoredEvent]) -> None:
        """Route a batch of events to views; one write per subscriber."""
        touched: dict[_View, list[bytes]] = {}
        routes = self._routes
        for event in events:
            views = routes.get(event.topics)
            if views is None:
                views = self._route(event.topics)
            for view in views:
                if event.private and not view.may_see(event.topics):
                    continue
                chunks = touched.get(view)
                if chunks is None:
                    touched[view] = [event.wire]
                else:
                    chunks.append(event.wire)
        self._dispatched = events[-1].position
        deliveries = written = 0
        for view, chunks in touched.items():
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            writes = view.send(data, self)
            deliveries += writes * len(chunks)
            written += writes * len(data)
        self.deliveries += deliveries
        self.bytes_written += written

    def _route(self, topics: tuple[str, ...]) -> tuple[_View, ...]:
        found: set[_View] = set(self._everything)
        for topic in topics:
            exact = self._exact.get(topic)
            if exact:
                found |= exact
        match = self.matcher.match
        for selector, views in self._templates.items():
            if any(match(selector, topic) for topic in topics):
                found |= views
        routes = self._routes
        if len(routes) >= _ROUTE_CACHE_MAX:
            routes.clear()
        views_found = routes[topics] = tuple(found)
        return views_found

    def _beat(self) -> None:
        for view in tuple(self._views.values()):
            view.beat()
        assert self._loop is not None
        self._beat_handle = self._loop.call_later(self.heartbeat, self._beat)

    # -- subscribing -------------------------------------------------------------------------

    async def subscribe(
        self, sub: Subscriber, last_event_id: str | None, preamble: Preamble
    ) -> Replay | None:
        """Register ``sub``, replay what it missed, then make it live; gap-free, no duplicates.

        Registration comes first and live events are held meanwhile; history is read only up
        to the last position already dispatched, so the held events start right after it.
        Either the preamble is written, or this raises: ``HistoryUnavailable`` when history
        cannot be read, ``SubscriberClosed`` when ``sub`` was closed before it could start.
        """
        view = self._join(sub)
        try:
            replay = None
            if last_event_id is not None:
                try:
                    replay = await self.backend.since(last_event_id, self._dispatched)
                except (ConnectionError, OSError) as exc:
                    raise HistoryUnavailable(f"history is unavailable: {exc}") from exc
            if sub.phase is Phase.CLOSED:
                raise SubscriberClosed("the subscriber left before its stream started")
            sub.write(preamble(replay))
            if replay is not None:
                await self._replay(sub, view, replay)
            while sub.held:
                data = b"".join(sub.held)
                sub.held, sub.held_size = [], 0
                sub.write(data)
                await sub.stream.drain()
            if sub.phase is Phase.REPLAYING:
                del view.waiting[sub]
                sub.phase = Phase.LIVE
                view.live[sub] = None
                view.changed()
            return replay
        except BaseException:
            self.detach(sub)
            raise

    async def _replay(self, sub: Subscriber, view: _View, replay: Replay) -> None:
        chunk: list[bytes] = []
        size = 0
        for event in replay.events:
            if not view.wants(event):
                continue
            chunk.append(event.wire)
            size += len(event.wire)
            if size >= _REPLAY_CHUNK:
                sub.write(b"".join(chunk))
                chunk, size = [], 0
                await sub.stream.drain()
                if sub.phase is Phase.CLOSED:
                    return
        if chunk:
            sub.write(b"".join(chunk))
            await sub.stream.drain()

    def _join(self, sub: Subscriber) -> _View:
        if sub.phase is not Phase.NEW:
            raise SubscriberClosed(f"a {sub.phase.value} subscriber cannot subscribe again")
        view = self._views.get(sub.key)
        if view is None:
            view = self._views[sub.key] = _View(sub.key, self.matcher)
            for selector in view.selectors:
                if selector == ALL:
                    self._everything.add(view)
                elif is_template(selector):
                    self._templates.setdefault(selector, set()).add(view)
                else:
                    self._exact.setdefault(selector, set()).add(view)
            self._routes.clear()
        sub.held, sub.held_size = [], 0
        sub.phase = Phase.REPLAYING
        view.waiting[sub] = None
        self._subscribers += 1
        self.subscriptions_total += 1
        return view

    def drop_slow(self, sub: Subscriber) -> None:
        """Close a subscriber that cannot keep up; it resumes later from history."""
        self.slow_dropped += 1
        self.detach(sub)
        sub.stream.abort()

    def detach(self, sub: Subscriber) -> None:
        """Close and forget ``sub``; safe to call more than once and from inside a fan-out."""
        was, sub.phase = sub.phase, Phase.CLOSED
        sub.held, sub.held_size = [], 0
        view = self._views.get(sub.key)
        if view is None:
            return
        if was is Phase.LIVE:
            del view.live[sub]
            view.changed()
        elif was is Phase.REPLAYING:
            del view.waiting[sub]
        else:
            return
        self._subscribers -= 1
        if not view.live and not view.waiting:
            del self._views[sub.key]
            for selector in view.selectors:
                for index in (self._exact, self._templates):
                    views = index.get(selector)
                    if views is not None:
                        views.discard(view)
                        if not views:
                            del index[selector]
            self._everything.discard(view)
            self._routes.clear()
