"""Announcements: notices delivered on every node but kept out of history, in order."""

from __future__ import annotations

import asyncio

from .commits import HubBusy
from .contract import Backend
from .events import Event, StoredEvent

_MAX_ANNOUNCING = 10_000  # notices (subscription events) waiting to be announced at most

_Asked = tuple[tuple[Event, ...], asyncio.Future[list[StoredEvent]]]


class Announcer:
    """Broadcasts notices through the backend (``Backend.broadcast``), one batch at a time.

    One task announces, in order, whatever was asked meanwhile in one broadcast; at most
    ``_MAX_ANNOUNCING`` events wait (a flood of subscribes would otherwise make a task each).
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._queue: list[_Asked] = []
        self._waiting = 0  # events in the queue
        self._task: asyncio.Task[None] | None = None

    def announce(
        self, loop: asyncio.AbstractEventLoop, events: tuple[Event, ...]
    ) -> asyncio.Future[list[StoredEvent]]:
        """Queue ``events``; the future resolves with them as broadcast, or fails with
        ``HubBusy`` at once (the notice is not sent) when too many already wait."""
        future: asyncio.Future[list[StoredEvent]] = loop.create_future()
        if self._waiting + len(events) > _MAX_ANNOUNCING:
            future.set_exception(HubBusy(f"hub busy: {self._waiting} notices wait to be announced"))
            return future
        self._queue.append((events, future))
        self._waiting += len(events)
        if self._task is None:
            self._task = loop.create_task(self._announce_all())
        return future

    async def settle(self) -> None:
        """Wait until everything asked so far has been announced (or has failed)."""
        if self._task is not None:
            await self._task

    async def _announce_all(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                events = [event for asked, _ in batch for event in asked]
                self._waiting -= len(events)
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
            self._task = None
