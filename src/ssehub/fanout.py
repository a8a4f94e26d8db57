"""Fan-out: routing a backend's batches to views' logs and writing them in passes.

Hot path (``deliver``): events arrive from the backend in batches; each matching *view*
(subscribers with the same selectors and claims) appends the batch's bytes, joined once, to
its log, and a *pass* writes every live member what it lacks of the log in one ``write``.
Passes go in slices of half a millisecond so publishes are read meanwhile, and what arrives
during a pass joins it. No task, queue or await per subscriber; a member whose unsent bytes
pass the bound is dropped by its face (see ``server``), never slowing the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from .commits import CommitChain
from .contract import Gap
from .events import StoredEvent
from .history import History
from .mercure import live_gap_notice
from .sse import HEARTBEAT
from .views import Dropper, Pass, View, Views

log = logging.getLogger("ssehub.hub")

_IMMEDIATE = 0.0005  # a fan-out cheaper than this never waits for company
_OUTBOX_MAX = 4096  # events gathered for one fan-out at most
_SLICE = 0.0005  # seconds of writing before the loop may read again (publishes, connects)


class FanOut:
    """Writes what the backend delivers to every view that wants it, in rounds of passes.

    The hub owns one; its counters (``deliveries``, ``bytes_written``) feed the metrics.
    """

    def __init__(
        self,
        views: Views,
        history: History,
        commits: CommitChain,
        dropper: Dropper,
        *,
        max_coalesce: float,
        max_round_intake: int,
    ) -> None:
        self.views = views
        self.routes = views.routes
        self.history = history
        self.commits = commits
        self.dropper = dropper
        self.deliveries = 0
        self.bytes_written = 0
        self.dispatched = 0  # the position of the last event routed
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
            commits.gate = self._may_take
        # Called with each fan-out round's wall time (e.g. a histogram): an event waits for
        # about one round at most, so this is the hub's share of every delivery's latency.
        self.on_round: Callable[[float], None] | None = None
        self.write_slice = _SLICE  # seconds of writing before the loop may read again
        self._dirty: dict[View, None] = {}  # views whose log some live member still lacks
        self._again: dict[View, None] = {}  # views to take through another pass next round
        self._walk_handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._beat_handle: asyncio.TimerHandle | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop`` (before the backend may deliver)."""
        self._loop = loop

    def start_beats(self, heartbeat: float) -> None:
        """A heartbeat comment on every stream every ``heartbeat`` seconds (0: none)."""
        if heartbeat > 0:
            assert self._loop is not None
            self._beat_handle = self._loop.call_later(heartbeat, self._beat, heartbeat)

    def stop_beats(self) -> None:
        if self._beat_handle is not None:
            self._beat_handle.cancel()

    def settle(self) -> None:
        """Write everything delivered so far, every round at once (no slices, no waits)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        while self._walk_handle is not None:
            self._walk_handle.cancel()
            self._walk(slice_s=float("inf"))

    def deliver(self, events: Sequence[StoredEvent]) -> None:
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

    def gap(self, gap: Gap) -> None:
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
            notice = named if first is not None and view.wants(first) else unnamed
            view.append(notice, 0, self.dropper)
            self._dirty[view] = None
        if self._walk_handle is None:
            self._walk()

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
        self.dispatched = max(self.dispatched, events[-1].position)
        if self.history.waiting:
            self.history.reached(self.dispatched)
        dirty, dropper = self._dirty, self.dropper
        for view, chunks in touched.items():
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._intake += len(data)
            view.append(data, len(chunks), dropper)
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

    def _beat(self, every: float) -> None:
        """A comment for every stream, as one more chunk of each view's log: the passes
        write it (with events, where some are due), never one long walk of its own."""
        dirty = self._dirty
        for view in tuple(self.views.by_key.values()):
            view.append(HEARTBEAT, 0, self.dropper)
            dirty[view] = None
        if self._walk_handle is None:
            self._walk()
        assert self._loop is not None
        self._beat_handle = self._loop.call_later(every, self._beat, every)
