"""The engine: publish batching, the subscription index, fan-out, replay and backpressure.

Hot path (``_deliver``): events arrive from the backend in batches; each matching *view*
(subscribers with the same selectors and claims) appends the batch's bytes, joined once, to
its log, and a *pass* writes every live member what it lacks of the log in one ``write``.
Passes go in slices of half a millisecond so publishes are read meanwhile, and what arrives
during a pass joins it. No task, queue or await per subscriber; a member whose unsent bytes
pass the bound is dropped by its face (see ``server``), never slowing the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

from .budgets import Budget
from .commits import CommitChain, HubBusy
from .contract import (
    Backend,
    Gap,
    HistoryUnavailable,
    InvalidEvent,
    Replay,
    ReportsGaps,
)
from .events import Event, StoredEvent
from .history import History
from .mercure import field_problem, live_gap_notice
from .settings import DEFAULTS
from .sse import HEARTBEAT
from .subscriber import Phase, Subscriber, SubscriberClosed
from .topics import TopicMatcher
from .views import Pass, View, Views

log = logging.getLogger("ssehub.hub")

_IMMEDIATE = 0.0005  # a fan-out cheaper than this never waits for company
_OUTBOX_MAX = 4096  # events gathered for one fan-out at most
_MAX_ANNOUNCING = 10_000  # notices (subscription events) waiting to be announced at most
_SLICE = 0.0005  # seconds of writing before the loop may read again (publishes, connects)

Preamble = Callable[[Replay | None], bytes]
"""Builds the first bytes of a stream (HTTP head, first comment, gap notice) once the
replay is known, since the response's Last-Event-ID header depends on it. A replay that did
not find its resume point holds only the first event the subscriber may see, if any: the
gap notice names it, and must never name another topic's (maybe private) event."""


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
        max_coalesce: float = DEFAULTS.coalesce,
        max_round_intake: int = DEFAULTS.max_round_intake,
        max_pending: int = DEFAULTS.max_pending_bytes,
        max_template_cost: int = DEFAULTS.max_template_expressions_per_address,
    ) -> None:
        self.backend = backend
        self.heartbeat = heartbeat
        self.max_buffer = max_buffer
        self.matcher = matcher or TopicMatcher()
        self.deliveries = 0
        self.bytes_written = 0
        self.subscriptions_total = 0
        self.slow_dropped = 0
        # Publish batching, bounded by what waits for the store; its counters feed metrics.
        self.commits = CommitChain(backend, max_pending)
        self.views = Views(self.matcher)
        # Template expressions per owner (a face's client address): each is tried against
        # every new topic, so many subscriptions at the per-subscription cap add up.
        self.template_budget = Budget(max_template_cost)
        self.routes = self.views.routes
        self._dispatched = 0
        self.max_coalesce = max_coalesce
        self._outbox: list[StoredEvent] = []
        self._flush_handle: asyncio.Handle | None = None
        self._last_cost = 0.0  # how long the last busy period of writing lasted
        self._last_end = 0.0
        self._round_started = 0.0
        # A round writes each member everything that arrived since its last write: what a
        # round takes in sets how long the next one takes. Publishers that outran the
        # fan-out made each round longer than the last (rounds of seconds).
        self._intake = 0  # bytes the round under way has taken in
        self.max_round_intake = max_round_intake
        if max_round_intake:
            self.commits.gate = self._may_take
        # Called with each fan-out round's wall time (e.g. a histogram): an event waits for
        # about one round at most, so this is the hub's share of every delivery's latency.
        self.on_round: Callable[[float], None] | None = None
        self.write_slice = _SLICE  # seconds of writing before the loop may read again
        self._dirty: dict[View, None] = {}  # views whose log some live member still lacks
        self._again: dict[View, None] = {}  # views to take through another pass next round
        self._walk_handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._beat_handle: asyncio.TimerHandle | None = None
        self._announce_queue: list[tuple[tuple[Event, ...], asyncio.Future[list[StoredEvent]]]] = []
        self._announce_waiting = 0  # events in the queue
        self._announcer: asyncio.Task[None] | None = None
        self.history = History(backend)  # what resuming subscribers missed, page by page

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop and start following the backend."""
        self._loop = asyncio.get_running_loop()
        self.commits.start(self._loop)
        if isinstance(self.backend, ReportsGaps):
            self.backend.on_gap = self._gap
        self._dispatched = await self.backend.start(self._deliver)
        if self.heartbeat > 0:
            self._beat_handle = self._loop.call_later(self.heartbeat, self._beat)

    async def settle(self) -> None:
        """Wait for the publishes in flight, then write everything accepted to the streams
        (every round, without waiting between them): a shutdown does this before it ends
        the streams, so no acknowledged event misses a subscriber still connected."""
        await self.commits.wait_idle()
        if self._announcer is not None:
            await self._announcer
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        while self._walk_handle is not None:
            self._walk_handle.cancel()
            self._walk(slice_s=float("inf"))

    async def close(self) -> None:
        """Stop heartbeats, wait for publishes in flight and write them, close the backend."""
        if self._beat_handle is not None:
            self._beat_handle.cancel()
        await self.settle()
        await self.backend.close()

    @property
    def subscriber_count(self) -> int:
        return self.views.subscribers

    # -- publishing --------------------------------------------------------------------------

    def publish(self, event: Event) -> asyncio.Future[StoredEvent]:
        """Queue ``event``; the future resolves once the backend has accepted it.

        Publishes of one loop iteration go to the backend as one batch (one transaction on
        durable backends); a batch waits for the previous one, which keeps publish order.
        Raises ``HubBusy`` when more than ``max_pending`` bytes already wait for the store.
        """
        # Refused alone and now: in the backend's batch it would fail the others' events too.
        problem = field_problem(event.id, event.type)
        if problem is None and event.retry is not None and event.retry < 0:
            problem = "bad retry: it must be >= 0"
        if problem is not None:
            raise InvalidEvent(problem)
        return self.commits.publish(event)

    def announce(self, *events: Event) -> asyncio.Future[list[StoredEvent]]:
        """Deliver ``events`` to matching subscribers on every node without keeping them in
        history (``Backend.broadcast``): notices about the moment, such as subscription
        events, that must never evict other topics' history.

        One task announces, in order, whatever was asked meanwhile in one broadcast; at most
        ``_MAX_ANNOUNCING`` events wait (a flood of subscribes would otherwise make a task
        each): past that the future fails with ``HubBusy`` and the notice is not sent."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("Hub.start() has not been awaited")
        future: asyncio.Future[list[StoredEvent]] = loop.create_future()
        if self._announce_waiting + len(events) > _MAX_ANNOUNCING:
            future.set_exception(
                HubBusy(f"hub busy: {self._announce_waiting} notices wait to be announced")
            )
            return future
        self._announce_queue.append((events, future))
        self._announce_waiting += len(events)
        if self._announcer is None:
            self._announcer = loop.create_task(self._announce_all())
        return future

    async def _announce_all(self) -> None:
        try:
            while self._announce_queue:
                batch, self._announce_queue = self._announce_queue, []
                events = [event for asked, _ in batch for event in asked]
                self._announce_waiting -= len(events)
                try:
                    stored = await self.backend.broadcast(events)
                except Exception as exc:  # each asker hears of it (subscriptions log it)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                at = 0
                for asked, future in batch:
                    if not future.done():
                        future.set_result(stored[at : at + len(asked)])
                    at += len(asked)
        finally:
            self._announcer = None

    # -- fan-out -----------------------------------------------------------------------------

    def _deliver(self, events: Sequence[StoredEvent]) -> None:
        """The backend's sink: route events to their views' logs and have them written.

        While a pass is under way the events join it at once: the members it has not reached
        yet get them in the same write. When the hub is idle, a fan-out that took a while and
        ended only just now makes the next wait until as long again has passed (at most
        ``max_coalesce``), carrying what arrives meanwhile: fewer writes per second for the
        same events. ``max_coalesce=0`` never waits (latency first)."""
        if not events:
            return
        if self._dirty:  # a pass is under way (its next slice is due): join it
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush()
            self._fan_out(events)
            return
        self._outbox.extend(events)
        if len(self._outbox) >= _OUTBOX_MAX and self._flush_handle is not None:
            self._flush_handle.cancel()  # enough company: go now rather than wait
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
        if events:
            self._fan_out(events)

    def _fan_out(self, events: Sequence[StoredEvent]) -> None:
        """Route a batch of events to views' logs, then go on with the pass."""
        touched: dict[View, list[bytes]] = {}
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
        if self.history.waiting:
            self.history.reached(self._dispatched)
        dirty = self._dirty
        for view, chunks in touched.items():
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._intake += len(data)
            view.append(data, len(chunks), self)
            dirty[view] = None
        if self._walk_handle is None:  # else the slice that is due carries them
            self._walk()

    def _walk(self, slice_s: float | None = None) -> None:
        """Write the views' logs for at most ``slice_s`` (``write_slice``), then let the loop
        read (publishes, new subscribers) before the next slice.

        A round takes every view with unwritten bytes through one pass. When bytes arrived
        during it for members it had already passed, the next round follows at once, or, with
        ``max_coalesce``, after as long as this one took (at most that): those members then
        get one write for more events."""
        self._walk_handle = None
        loop = self._loop
        assert loop is not None
        if not self._round_started:
            # perf_counter: uvloop's clock moves in whole milliseconds, once per iteration.
            self._round_started = time.perf_counter()
        dirty, again = self._dirty, self._again
        deadline = time.perf_counter() + (self.write_slice if slice_s is None else slice_s)
        deliveries = written = 0
        while dirty:
            view = next(iter(dirty))
            ended, n, size = view.flush(deadline)
            deliveries += n
            written += size
            if ended is Pass.CUT:
                break
            del dirty[view]
            if ended is Pass.AGAIN:
                again[view] = None
        self.deliveries += deliveries
        self.bytes_written += written
        if dirty:
            self._walk_handle = loop.call_soon(self._walk)
            return
        now = loop.time()
        took, self._round_started = time.perf_counter() - self._round_started, 0.0
        self._intake = 0
        self.commits.release()
        if self.on_round is not None:
            self.on_round(took)
        if again:
            dirty.update(again)
            again.clear()
            delay = min(took, self.max_coalesce)
            if delay < _IMMEDIATE:
                self._walk_handle = loop.call_soon(self._walk)
            else:
                self._walk_handle = loop.call_later(delay, self._walk)
        else:
            self._last_cost, self._last_end = took, now

    def _may_take(self) -> bool:
        """Whether the commit chain may hand the fan-out another batch now."""
        return not self._round_started or self._intake < self.max_round_intake

    def _gap(self, gap: Gap) -> None:
        """The backend's follower missed events: tell every subscriber, after what came
        before the gap and before what follows it."""
        log.warning("events were lost on their way to this node: %s", gap)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        named = live_gap_notice(gap.resumed_at, gap.missed)
        unnamed = live_gap_notice(None, gap.missed)  # for who may not see that event
        first = gap.first
        for view in tuple(self.views.by_key.values()):
            view.append(named if first is not None and view.wants(first) else unnamed, 0, self)
            self._dirty[view] = None
        if self._walk_handle is None:
            self._walk()

    def _beat(self) -> None:
        """A comment for every stream, as one more chunk of each view's log: the passes
        write it (with events, where some are due), never one long walk of its own."""
        dirty = self._dirty
        for view in tuple(self.views.by_key.values()):
            view.append(HEARTBEAT, 0, self)
            dirty[view] = None
        if self._walk_handle is None:
            self._walk()
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
        view = self.views.join(sub)
        self.subscriptions_total += 1
        try:
            replay = None
            upto = self._dispatched
            if last_event_id is not None:
                try:
                    replay, upto = await self.history.first_page(
                        sub, last_event_id, upto, lambda: self._dispatched
                    )
                except (ConnectionError, OSError) as exc:
                    raise HistoryUnavailable(f"history is unavailable: {exc}") from exc
            if sub.phase is Phase.CLOSED:
                raise SubscriberClosed("the subscriber left before its stream started")
            sub.write(preamble(replay if replay is None or replay.found else _seen(replay, view)))
            if replay is not None:
                await self.history.replay(sub, view, replay, upto)
            while sub.held:
                data = b"".join(sub.held)
                sub.held, sub.held_size = [], 0
                sub.write(data)
                await sub.stream.drain()
            self.views.go_live(sub)
            return replay
        except BaseException:
            self.detach(sub)
            raise

    def subscribe_now(self, sub: Subscriber, preamble: Preamble) -> None:
        """``subscribe`` for a subscriber with no Last-Event-ID, without a task: it has no
        replay to wait for, and nothing is held for it between its join and its going live
        (nothing runs in between), so it writes its preamble and is live at once. Raises
        ``SubscriberClosed`` when ``sub`` was closed before it could start."""
        self.views.join(sub)
        self.subscriptions_total += 1
        try:
            sub.write(preamble(None))
        except BaseException:
            self.detach(sub)
            raise
        self.views.go_live(sub)

    def drop_slow(self, sub: Subscriber) -> None:
        """Close a subscriber that cannot keep up; it resumes later from history."""
        self.slow_dropped += 1
        self.detach(sub)
        sub.stream.abort()

    def detach(self, sub: Subscriber) -> None:
        """Close and forget ``sub``; safe to call more than once and from inside a fan-out."""
        self.views.leave(sub)


def _seen(replay: Replay, view: View) -> Replay:
    """``replay`` holding only its first event ``view`` may see (or none)."""
    first = next((event for event in replay.events if view.wants(event)), None)
    return dataclasses.replace(replay, events=() if first is None else (first,))
