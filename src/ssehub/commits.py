"""Publish batching: the publishes of one loop iteration go to the backend as one batch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .contract import Appended, Backend
from .events import Event, StoredEvent

log = logging.getLogger("ssehub.hub")

_Batch = list[tuple[Event, asyncio.Future[StoredEvent]]]


class CommitChain:
    """Appends batches one after another, which keeps publish order; one transaction per
    batch on durable backends. Owns the one task that appends (never more than one)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.loop: asyncio.AbstractEventLoop | None = None  # bound by start()
        self.published = 0  # events the backend stored (each once)
        self.repeated = 0  # publishes of an id history held: answered, not stored again
        self.failures = 0
        self.on_append: Callable[[float], None] | None = None  # e.g. a latency histogram
        self._pending: _Batch = []
        self._committing = False
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None  # set by wait_idle() to hear the last commit

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def publish(self, event: Event) -> asyncio.Future[StoredEvent]:
        """Queue ``event``; the future resolves once the backend has accepted it."""
        loop = self.loop
        if loop is None:
            raise RuntimeError("Hub.start() has not been awaited")
        future: asyncio.Future[StoredEvent] = loop.create_future()
        self._pending.append((event, future))
        if not self._committing:
            self._committing = True
            loop.call_soon(self._next)
        return future

    async def wait_idle(self) -> None:
        """Return once every queued publish has been answered."""
        if self._committing:
            self._idle = asyncio.Event()
            await self._idle.wait()

    def _next(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._committing = False
            self._task = None
            if self._idle is not None:
                self._idle.set()
            return
        assert self.loop is not None
        self._task = self.loop.create_task(self._commit(batch))

    async def _commit(self, batch: _Batch) -> None:
        started = time.perf_counter()
        try:
            stored = await self.backend.append([event for event, _ in batch])
        except Exception as exc:  # every publisher of the batch hears about it
            self.failures += len(batch)
            log.warning("backend refused a batch of %d events: %s", len(batch), exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            if self.on_append is not None:
                self.on_append(time.perf_counter() - started)
            repeats = stored.repeats if isinstance(stored, Appended) else 0
            self.published += len(stored) - repeats
            self.repeated += repeats
            for (_, future), accepted in zip(batch, stored, strict=True):
                if not future.done():
                    future.set_result(accepted)
        self._next()
