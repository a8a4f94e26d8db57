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

from .backends import REPLAY_PAGE, Backend, Gap, Replay, ReportsGaps
from .errors import HubError
from .events import Event, StoredEvent
from .mercure import field_problem, gap_notice, live_gap_notice
from .routes import RouteIndex
from .sse import HEARTBEAT
from .subscriber import Subscriber, ViewKey
from .topics import TopicMatcher

log = logging.getLogger("ssehub.hub")

_REPLAY_CHUNK = 64 * 1024
_IMMEDIATE = 0.0005  # a fan-out cheaper than this never waits for company
_OUTBOX_MAX = 4096  # events gathered for one fan-out at most
_CATCH_UP = 10.0  # seconds a resume waits for this node to reach the subscriber's event

Preamble = Callable[[Replay | None], bytes]
"""Builds the first bytes of a stream (HTTP head, first comment, gap notice) once the
replay is known, since the response's Last-Event-ID header depends on it."""


def _framed(sub: Subscriber, data: bytes) -> bytes:
    """``data`` as ``sub``'s face frames a body write (replay and notices: one subscriber's)."""
    return data if sub.frame is None else sub.frame(data)


class _View:
    """Subscribers that see exactly the same events, so they can share one buffer."""

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

    def send(self, data: bytes, hub: Hub) -> int:
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
                held = sub.held
                assert held is not None
                held.append(data)
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


class Hub:
    """Publishes through a backend and fans its events out to subscribers.

    One Hub per event loop; the server, the ASGI app and in-process code share it.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        heartbeat: float = 15.0,
        max_buffer: int = 1 << 20,
        matcher: TopicMatcher | None = None,
        max_coalesce: float = 0.005,
    ) -> None:
        self.backend = backend
        self.heartbeat = heartbeat
        self.max_buffer = max_buffer
        self.matcher = matcher or TopicMatcher()
        self.published = 0
        self.deliveries = 0
        self.bytes_written = 0
        self.subscriptions_total = 0
        self.slow_dropped = 0
        self.publish_failures = 0
        self.on_append: Callable[[float], None] | None = None  # e.g. a latency histogram
        self._views: dict[ViewKey, _View] = {}
        self.routes: RouteIndex[_View] = RouteIndex()
        self._dispatched = 0
        self.max_coalesce = max_coalesce
        self._outbox: list[StoredEvent] = []
        self._flush_handle: asyncio.Handle | None = None
        self._last_cost = 0.0
        self._last_end = 0.0
        self._pending: list[tuple[Event, asyncio.Future[StoredEvent]]] = []
        self._committing = False
        self._idle: asyncio.Event | None = None  # set by close() to hear the last commit end
        self._loop: asyncio.AbstractEventLoop | None = None
        self._beat_handle: asyncio.TimerHandle | None = None
        self._subscribers = 0
        self._catching_up: list[tuple[int, asyncio.Future[None]]] = []
        self._announcing: set[asyncio.Task[list[StoredEvent]]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop and start following the backend."""
        self._loop = asyncio.get_running_loop()
        if isinstance(self.backend, ReportsGaps):
            self.backend.on_gap = self._gap
        self._dispatched = await self.backend.start(self._deliver)
        if self.heartbeat > 0:
            self._beat_handle = self._loop.call_later(self.heartbeat, self._beat)

    async def close(self) -> None:
        """Stop heartbeats, wait for publishes in flight, close the backend."""
        if self._beat_handle is not None:
            self._beat_handle.cancel()
        if self._committing:
            self._idle = asyncio.Event()
            await self._idle.wait()
        if self._flush_handle is not None:  # what was acknowledged goes out before we stop
            self._flush_handle.cancel()
            self._flush()
        await self.backend.close()

    @property
    def subscriber_count(self) -> int:
        return self._subscribers

    # -- publishing --------------------------------------------------------------------------

    def publish(self, event: Event) -> asyncio.Future[StoredEvent]:
        """Queue ``event``; the future resolves once the backend has accepted it.

        Publishes of one loop iteration go to the backend as one batch (one transaction on
        durable backends); a batch waits for the previous one, which keeps publish order.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("Hub.start() has not been awaited")
        # Refused alone and now: in the backend's batch it would fail the others' events too.
        problem = field_problem(event.id, event.type)
        if problem is None and event.retry is not None and event.retry < 0:
            problem = "bad retry: it must be >= 0"
        if problem is not None:
            raise HubError(400, problem)
        future: asyncio.Future[StoredEvent] = loop.create_future()
        self._pending.append((event, future))
        if not self._committing:
            self._committing = True
            loop.call_soon(self._commit_next)
        return future

    def _commit_next(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._committing = False
            if self._idle is not None:
                self._idle.set()
            return
        assert self._loop is not None
        self._loop.create_task(self._commit(batch))

    async def _commit(self, batch: list[tuple[Event, asyncio.Future[StoredEvent]]]) -> None:
        started = time.perf_counter()
        try:
            stored = await self.backend.append([event for event, _ in batch])
        except Exception as exc:  # every publisher of the batch hears about it
            self.publish_failures += len(batch)
            log.warning("backend refused a batch of %d events: %s", len(batch), exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            if self.on_append is not None:
                self.on_append(time.perf_counter() - started)
            self.published += len(stored)
            for (_, future), accepted in zip(batch, stored, strict=True):
                if not future.done():
                    future.set_result(accepted)
        self._commit_next()

    def announce(self, *events: Event) -> asyncio.Task[list[StoredEvent]]:
        """Deliver ``events`` to matching subscribers on every node without keeping them in
        history (``Backend.broadcast``): notices about the moment, such as subscription
        events, that must never evict other topics' history."""
        if self._loop is None:
            raise RuntimeError("Hub.start() has not been awaited")
        task = self._loop.create_task(self.backend.broadcast(events))
        self._announcing.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._announcing.discard)
        return task

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
        routes = self.routes.cached
        for event in events:
            views = routes.get(event.topics)
            if views is None:
                views = self.routes.route(event.topics)
            for view in views:
                if event.private and not view.may_see(event.topics):
                    continue
                chunks = touched.get(view)
                if chunks is None:
                    touched[view] = [event.wire]
                else:
                    chunks.append(event.wire)
        # A broadcast takes no position of its own (it may carry an older one): never go back.
        self._dispatched = max(self._dispatched, events[-1].position)
        if self._catching_up:
            self._wake()
        deliveries = written = 0
        for view, chunks in touched.items():
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            writes = view.send(data, self)
            deliveries += writes * len(chunks)
            written += writes * len(data)
        self.deliveries += deliveries
        self.bytes_written += written

    def _gap(self, gap: Gap) -> None:
        """The backend's follower missed events: tell every subscriber, after what came
        before the gap and before what follows it."""
        log.warning("events were lost on their way to this node: %s", gap)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        notice = live_gap_notice(gap)
        for view in tuple(self._views.values()):
            view.send(notice, self)

    def _wake(self) -> None:
        waiting, self._catching_up = self._catching_up, []
        for position, future in waiting:
            if future.done():
                continue
            if position <= self._dispatched:
                future.set_result(None)
            else:
                self._catching_up.append((position, future))

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
        """
        view = self._join(sub)
        try:
            replay = None
            upto = self._dispatched
            if last_event_id is not None:
                try:
                    replay, upto = await self._history(sub, last_event_id, upto)
                except (ConnectionError, OSError) as exc:
                    raise HubError(
                        503, f"history is unavailable: {exc}", (("Retry-After", "1"),)
                    ) from exc
            if sub not in view.waiting:
                return replay
            sub.write(preamble(replay))
            if replay is not None:
                await self._replay(sub, view, replay)
                page = replay
                while page.more and sub in view.waiting:
                    page = await self._next_page(sub, page.events[-1], upto)
                    await self._replay(sub, view, page)
            while sub.held:
                data = b"".join(sub.held)
                sub.held, sub.held_size = [], 0
                sub.write(data)
                await sub.stream.drain()
            if sub in view.waiting:
                del view.waiting[sub]
                sub.held = None
                view.live[sub] = None
                view.changed()
            return replay
        except BaseException:
            self.detach(sub)
            raise

    async def _history(self, sub: Subscriber, last_event_id: str, upto: int) -> tuple[Replay, int]:
        """The first page after ``last_event_id``, and the position replay goes up to."""
        replay = await self.backend.since(last_event_id, upto, REPLAY_PAGE)
        if replay.position <= upto:
            return replay, upto
        # The subscriber had an event this node has not fanned out yet (its follower lags
        # the node the subscriber came from): what is held meanwhile repeats what it had.
        # Wait for the fan-out to pass that event, drop what was held, read up to there.
        assert self._loop is not None
        reached: asyncio.Future[None] = self._loop.create_future()
        self._catching_up.append((replay.position, reached))
        try:
            await asyncio.wait_for(reached, _CATCH_UP)
        except TimeoutError:
            raise HubError(
                503, "this hub node is behind the shared stream; retry", (("Retry-After", "1"),)
            ) from None
        if sub.held is not None:
            sub.held.clear()
            sub.held_size = 0
        upto = self._dispatched
        return await self.backend.since(last_event_id, upto, REPLAY_PAGE), upto

    async def _next_page(self, sub: Subscriber, last: StoredEvent, upto: int) -> Replay:
        """The page after ``last``, read only once the previous one drained: a subscriber
        that does not read holds one page, never the whole history."""
        try:
            page = await self.backend.since(last.position, upto, REPLAY_PAGE)
        except (ConnectionError, OSError) as exc:  # mid-stream: it resumes from what it got
            log.warning("closing a replaying subscriber: history is unavailable: %s", exc)
            sub.stream.abort()
            raise ConnectionResetError("history is unavailable") from exc
        if not page.found:  # history moved past it mid-replay: say so, never skip silently
            view = self._views[sub.key]
            first = [e for e in page.events if view.wants(e)][:1]
            notice = gap_notice(last.id, Replay(first, False))
            sub.write(_framed(sub, notice))
        return page

    async def _replay(self, sub: Subscriber, view: _View, replay: Replay) -> None:
        chunk: list[bytes] = []
        size = 0
        for event in replay.events:
            if not view.wants(event):
                continue
            chunk.append(event.wire)
            size += len(event.wire)
            if size >= _REPLAY_CHUNK:
                sub.write(_framed(sub, b"".join(chunk)))
                chunk, size = [], 0
                await sub.stream.drain()
                if sub not in view.waiting:
                    return
        if chunk:
            sub.write(_framed(sub, b"".join(chunk)))
            await sub.stream.drain()

    def _join(self, sub: Subscriber) -> _View:
        view = self._views.get(sub.key)
        if view is None:
            view = self._views[sub.key] = _View(sub.key, self.matcher)
            self.routes.add(view)
        sub.held, sub.held_size = [], 0
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
        """Forget ``sub``; safe to call more than once and from inside a fan-out."""
        view = self._views.get(sub.key)
        if view is None:
            return
        if sub in view.live:
            del view.live[sub]
            view.changed()
        elif sub in view.waiting:
            del view.waiting[sub]
        else:
            return
        sub.held = None
        self._subscribers -= 1
        if not view.live and not view.waiting:
            del self._views[sub.key]
            self.routes.remove(view)
