"""The engine: publishing, subscribing with replay, and the parts it is made of.

A publish goes through the commit chain (``commits``) to the backend; the backend delivers
what it stored, on every node, to the fan-out (``fanout``), which writes each view's log to
its members in passes. Subscribing joins a view, replays history (``history``), then goes
live with no gap and no duplicate. Notices outside history go through ``announcements``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from .announcements import Announcer
from .budgets import Budget
from .commits import CommitChain
from .contract import Backend, HistoryUnavailable, InvalidEvent, Replay, ReportsGaps
from .events import Event, StoredEvent
from .fanout import FanOut
from .history import History
from .mercure import field_problem
from .settings import DEFAULTS
from .subscriber import Phase, Subscriber, SubscriberClosed
from .topics import TopicMatcher
from .views import View, Views

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
        self.subscriptions_total = 0
        self.slow_dropped = 0
        # Publish batching, bounded by what waits for the store; its counters feed metrics.
        self.commits = CommitChain(backend, max_pending)
        self.views = Views(self.matcher)
        # Template expressions per owner (a face's client address): each is tried against
        # every new topic, so many subscriptions at the per-subscription cap add up.
        self.template_budget = Budget(max_template_cost)
        self.routes = self.views.routes
        self.history = History(backend)  # what resuming subscribers missed, page by page
        self.fanout = FanOut(
            self.views,
            self.history,
            self.commits,
            self,
            max_coalesce=max_coalesce,
            max_round_intake=max_round_intake,
        )
        self.announcer = Announcer(backend)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop and start following the backend."""
        self._loop = loop = asyncio.get_running_loop()
        self.commits.start(loop)
        if isinstance(self.backend, ReportsGaps):
            self.backend.on_gap = self.fanout.gap
        self.fanout.bind(loop)
        self.fanout.dispatched = await self.backend.start(self.fanout.deliver)
        self.fanout.start_beats(self.heartbeat)

    async def settle(self) -> None:
        """Wait for the publishes in flight, then write everything accepted to the streams
        (every round, without waiting between them): a shutdown does this before it ends
        the streams, so no acknowledged event misses a subscriber still connected."""
        await self.commits.wait_idle()
        await self.announcer.settle()
        self.fanout.settle()

    async def close(self) -> None:
        """Stop heartbeats, wait for publishes in flight and write them, close the backend."""
        self.fanout.stop_beats()
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
        events, that must never evict other topics' history. In order, batched; fails with
        ``HubBusy`` (the notice is not sent) when too many notices already wait."""
        if self._loop is None:
            raise RuntimeError("Hub.start() has not been awaited")
        return self.announcer.announce(self._loop, events)

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
            upto = self.fanout.dispatched
            if last_event_id is not None:
                try:
                    replay, upto = await self.history.first_page(
                        sub, last_event_id, upto, lambda: self.fanout.dispatched
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
