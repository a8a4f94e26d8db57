"""Publish batching: the publishes of one loop iteration go to the backend as one batch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .contract import Appended, AppendsAtOnce, Backend
from .events import Event, StoredEvent
from .settings import DEFAULTS

log = logging.getLogger("ssehub.hub")

_Batch = list[tuple[Event, asyncio.Future[StoredEvent], int]]  # an event, its answer, its cost
_OVERHEAD = 256  # an event, its future and its place in a batch, roughly
_MAX_BATCH = 4096  # events in one append at most (one transaction, one Redis script)


def _at_once(backend: Backend) -> Callable[[list[Event]], list[StoredEvent]] | None:
    """``backend.append_now`` when its class defines it beside ``append``: a subclass that
    overrides ``append`` alone (a double that fails or counts) is appended through it."""
    if not isinstance(backend, AppendsAtOnce):
        return None
    mro = type(backend).__mro__
    owner = next((c for c in mro if "append" in c.__dict__), None)
    if owner is None or "append_now" not in owner.__dict__:
        return None
    return backend.append_now


class HubBusy(Exception):
    """Too many publishes are waiting for the store (it is slow or stalled); the app answers
    503 with Retry-After, and the publisher tries again."""


def _cost(event: Event) -> int:
    return _OVERHEAD + len(event.data) + sum(map(len, event.topics)) + len(event.id or "")


class CommitChain:
    """Appends batches one after another, which keeps publish order; one transaction per
    batch on durable backends. Owns the one task that appends (never more than one).

    What waits for the store (queued, and the batch being appended) is bounded by
    ``max_pending`` bytes: while one slow commit is in flight, every connection's pipelined
    publishes would otherwise pile up behind it."""

    def __init__(self, backend: Backend, max_pending: int = DEFAULTS.max_pending_bytes) -> None:
        self.backend = backend
        self.max_pending = max_pending
        self.pending_bytes = 0  # queued and in flight
        self.busy = 0  # publishes refused with HubBusy
        self.loop: asyncio.AbstractEventLoop | None = None  # bound by start()
        self.published = 0  # events the backend stored (each once)
        self.repeated = 0  # publishes of an id history held: answered, not stored again
        self.failures = 0
        self.on_append: Callable[[float], None] | None = None  # e.g. a latency histogram
        self._pending: _Batch = []
        self._committing = False
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None  # set by wait_idle() to hear the last commit
        # Memory: a batch is appended in the callback that gathered it, without a task: a
        # task's step is one more loop iteration, behind one more slice of a fan-out under
        # way.
        self._at_once = _at_once(backend)
        # Whether a batch may go now (the hub's fan-out is not too far behind); when it may
        # not, the chain waits for ``release``, and its publishers for their answers.
        self.gate: Callable[[], bool] | None = None
        self._held = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def publish(self, event: Event) -> asyncio.Future[StoredEvent]:
        """Queue ``event``; the future resolves once the backend has accepted it."""
        loop = self.loop
        if loop is None:
            raise RuntimeError("Hub.start() has not been awaited")
        cost = _cost(event)
        if self.pending_bytes and self.pending_bytes + cost > self.max_pending:
            self.busy += 1
            raise HubBusy(
                f"hub busy: {self.pending_bytes} bytes of publishes wait for the store"
                f" (--max-pending-bytes {self.max_pending}); retry"
            )
        self.pending_bytes += cost
        future: asyncio.Future[StoredEvent] = loop.create_future()
        self._pending.append((event, future, cost))
        if not self._committing:
            self._committing = True
            loop.call_soon(self._next)
        return future

    async def wait_idle(self) -> None:
        """Return once every queued publish has been answered."""
        if self._committing:
            self._idle = asyncio.Event()
            await self._idle.wait()

    def release(self) -> None:
        """The gate may have opened: go on with what waits, if the chain was held."""
        if self._held and self.loop is not None:
            self._held = False
            self.loop.call_soon(self._next)

    def _next(self) -> None:
        if self._pending and self.gate is not None and not self.gate():
            self._held = True  # still committing: publishes queue without a callback each
            return
        append = self._at_once
        while append is not None and self._pending:  # no task: nothing to wait for
            batch = self._take()
            started = time.perf_counter()
            try:
                outcome: list[StoredEvent] | Exception = append([e for e, _, _ in batch])
            except Exception as exc:
                outcome = exc
            self._settle(batch, started, outcome)
        if not self._pending:
            self._committing = False
            self._task = None
            if self._idle is not None:
                self._idle.set()
            return
        assert self.loop is not None
        self._task = self.loop.create_task(self._commit(self._take()))

    def _take(self) -> _Batch:
        batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
        return batch

    async def _commit(self, batch: _Batch) -> None:
        started = time.perf_counter()
        try:
            outcome: list[StoredEvent] | Exception = await self.backend.append(
                [event for event, _, _ in batch]
            )
        except Exception as exc:
            outcome = exc
        self._settle(batch, started, outcome)
        self._next()

    def _settle(
        self, batch: _Batch, started: float, outcome: list[StoredEvent] | Exception
    ) -> None:
        """Answer every publisher of the batch: its stored event, or the store's refusal."""
        self.pending_bytes -= sum([cost for _, _, cost in batch])
        if isinstance(outcome, Exception):
            self.failures += len(batch)
            log.warning("backend refused a batch of %d events: %s", len(batch), outcome)
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(outcome)
            return
        if self.on_append is not None:
            self.on_append(time.perf_counter() - started)
        repeats = outcome.repeats if isinstance(outcome, Appended) else 0
        self.published += len(outcome) - repeats
        self.repeated += repeats
        for (_, future, _), accepted in zip(batch, outcome, strict=True):
            if not future.done():
                future.set_result(accepted)
