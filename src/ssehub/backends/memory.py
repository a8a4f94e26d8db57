"""The default backend: history in memory, bounded by count and by age."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Sequence

from ..contract import EARLIEST, Replay, Sink, new_event_id
from ..events import Event, StoredEvent
from ..settings import DEFAULTS


class MemoryBackend:
    """Positions are consecutive integers, so a position finds its history slot directly."""

    def __init__(
        self,
        history_size: int = DEFAULTS.history_size,
        history_max_age: float = DEFAULTS.history_max_age,
        history_max_bytes: int = DEFAULTS.history_max_bytes,
    ) -> None:
        if history_size < 0 or history_max_age < 0 or history_max_bytes < 0:
            raise ValueError("history bounds must be >= 0")
        self.history_size = history_size
        self.history_max_age = history_max_age
        self.history_max_bytes = history_max_bytes
        self._bytes = 0
        self._history: deque[StoredEvent] = deque()
        self._by_id: dict[str, StoredEvent] = {}
        self._position = 0
        self._sink: Sink | None = None

    async def start(self, sink: Sink) -> int:
        self._sink = sink
        return self._position

    async def close(self) -> None:
        self._sink = None

    @property
    def retained(self) -> int:
        """Events in history now."""
        return len(self._history)

    @property
    def last_id(self) -> str:
        return self._history[-1].id if self._history else EARLIEST

    async def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        now = time.time()
        accepted = []
        for event in events:
            self._position += 1
            stored = StoredEvent.accept(event, event.id or new_event_id(), self._position, now)
            accepted.append(stored)
            if self.history_size:
                self._history.append(stored)
                self._by_id[stored.id] = stored
                self._bytes += _footprint(stored)
        self._trim(now)
        if self._sink is not None:
            self._sink(accepted)
        return accepted

    async def since(self, last_id: str, upto: int) -> Replay:
        self._trim(time.time())
        history = self._history
        if last_id == EARLIEST:
            start, found = 0, True
        else:
            anchor = self._by_id.get(last_id)
            if anchor is None:
                start, found = 0, False
            else:
                start, found = anchor.position - history[0].position + 1, True
        events = [e for e in itertools.islice(history, start, None) if e.position <= upto]
        return Replay(events, found)

    def _trim(self, now: float) -> None:
        history, by_id = self._history, self._by_id
        excess = len(history) - self.history_size
        oldest = now - self.history_max_age if self.history_max_age else None
        while history and (
            excess > 0
            or self._bytes > self.history_max_bytes
            or (oldest is not None and history[0].time < oldest)
        ):
            gone = history.popleft()
            excess -= 1
            self._bytes -= _footprint(gone)
            # A later event may reuse a publisher's id; only forget the id if it is this one.
            if by_id.get(gone.id) is gone:
                del by_id[gone.id]


def _footprint(event: StoredEvent) -> int:
    """Roughly what an event costs in memory: its bytes twice (text and wire) plus overhead."""
    return 2 * len(event.wire) + 200
