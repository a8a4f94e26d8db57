"""The default backend: history in memory, bounded by count, by age and by bytes held."""

from __future__ import annotations

import time
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from sys import getsizeof

from ..contract import (
    EARLIEST,
    REPLAY_PAGE,
    Appended,
    Replay,
    Sink,
    broadcast_locally,
    new_event_id,
)
from ..events import Event, StoredEvent
from ..settings import DEFAULTS


class MemoryBackend:
    """History is a list whose oldest live slot is ``_head`` (trimmed slots are released in
    bulk), so a resume point's slot is found by bisection on positions, not by walking."""

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
        self._history: list[StoredEvent] = []
        # Each event's footprint, slot for slot: measured once on append, not again on trim.
        self._footprints = array("q")
        self._head = 0  # slots before it are trimmed, awaiting release
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
        return len(self._history) - self._head

    @property
    def last_id(self) -> str:
        return self._history[-1].id if self.retained else EARLIEST

    async def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        return self.append_now(events)

    def append_now(self, events: Sequence[Event]) -> list[StoredEvent]:
        now = time.time()
        self._trim(now)  # an id past its age is no longer in history: it may come again
        accepted: list[StoredEvent] = []
        new: list[StoredEvent] = []
        batch: dict[str, StoredEvent] = {}  # a repeat inside one batch, even without history
        for event in events:
            if event.id is not None:
                known = batch.get(event.id) or self._by_id.get(event.id)
                if known is not None:  # a publisher's retry: the event it already has
                    accepted.append(known)
                    continue
            self._position += 1
            stored = StoredEvent.accept(event, event.id or new_event_id(), self._position, now)
            accepted.append(stored)
            new.append(stored)
            batch[stored.id] = stored
            if self.history_size:
                footprint = _footprint(stored)
                self._history.append(stored)
                self._footprints.append(footprint)
                self._by_id[stored.id] = stored
                self._bytes += footprint
        self._trim(now)
        if self._sink is not None and new:
            self._sink(new)
        return Appended(accepted, len(accepted) - len(new))

    async def broadcast(self, events: Sequence[Event]) -> list[StoredEvent]:
        return broadcast_locally(self._sink, events, self._position)

    async def since(self, after: str | int, upto: int, limit: int = REPLAY_PAGE) -> Replay:
        self._trim(time.time())
        history, oldest = self._history, self._head
        # Positions in history are consecutive: a position just before the oldest has lost
        # nothing.
        head = history[oldest].position if self.retained else self._position + 1
        if isinstance(after, int):
            position, found = after, after + 1 >= head
        elif after == EARLIEST:
            position, found = 0, True
        else:
            anchor = self._by_id.get(after)
            position, found = (0, False) if anchor is None else (anchor.position, True)
        start = bisect_right(history, position, oldest, key=_position)
        events: list[StoredEvent] = []
        size, more = 0, False
        for index in range(start, len(history)):
            event = history[index]
            if event.position > upto:
                break
            if size >= limit and events:
                more = True
                break
            events.append(event)
            size += len(event.wire)
        return Replay(events, found, more)

    def _trim(self, now: float) -> None:
        history, by_id, footprints = self._history, self._by_id, self._footprints
        excess = self.retained - self.history_size
        oldest = now - self.history_max_age if self.history_max_age else None
        head = self._head
        while head < len(history) and (
            excess > 0
            or self._bytes > self.history_max_bytes
            or (oldest is not None and history[head].time < oldest)
        ):
            gone = history[head]
            history[head] = _TRIMMED  # its memory goes now, its slot with the next release
            self._bytes -= footprints[head]
            head += 1
            excess -= 1
            # A later event may reuse a publisher's id; only forget the id if it is this one.
            if by_id.get(gone.id) is gone:
                del by_id[gone.id]
        if head > len(history) // 2:  # release trimmed slots in bulk: amortized O(1) each
            del history[:head]
            del footprints[:head]
            head = 0
        self._head = head


_TRIMMED = StoredEvent("", 0, (), "", False, None, None, 0.0, b"")


def _position(event: StoredEvent) -> int:
    return event.position


# The event object (with its position and time), its entries in the history list, the
# footprints array and the id index.
_OVERHEAD = StoredEvent.__basicsize__ + 16 + 32 + 24 + 8 + 8 + 64


def _footprint(event: StoredEvent) -> int:
    """What history holds for an event: every string and bytes object it keeps alive (data,
    wire, id, type and each topic, at their real size, wide characters included), its topic
    tuple and the object itself with its index entries."""
    size = _OVERHEAD + getsizeof(event.data) + getsizeof(event.wire) + getsizeof(event.id)
    size += getsizeof(event.topics) + sum(map(getsizeof, event.topics))
    if event.type is not None:
        size += getsizeof(event.type)
    return size
