"""The engine's side of storage: the one contract every backend keeps (append, follow, since).

It lives with the engine, which owns the delivery guarantees; backends implement it and import
it from here, never the reverse.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .events import Event, StoredEvent
from .mercure import EARLIEST
from .sse import encode_event

REPLAY_PAGE = 64 * 1024
"""Wire bytes of one page of replay: what a replaying subscriber costs in memory at most."""


class HistoryUnavailable(Exception):
    """The backend could not read history (its store is away); the face answers 503."""


class InvalidEvent(ValueError):
    """An event no stream could carry and bring back (its id, type or retry); refused before
    it joins a batch, where it would fail the others. The app answers 400."""


class Appended(list[StoredEvent]):
    """What ``Backend.append`` returns: one entry per event given, and how many of them were
    a publisher's retry (an id history held, answered with the entry stored first), so
    counts of updates count each once. A plain list means every entry was new."""

    def __init__(self, entries: Sequence[StoredEvent], repeats: int) -> None:
        super().__init__(entries)
        self.repeats = repeats


Sink = Callable[[Sequence[StoredEvent]], None]
"""Receives every accepted event of this backend, in order, in batches, on the hub's loop."""


@dataclass(frozen=True, slots=True)
class Replay:
    """What history holds after a requested id.

    ``found`` is False when the id is not (or no longer) in history: the events then start at
    the oldest one retained, and the subscriber must be told it may have missed some.
    ``more`` is True when this page stopped at its size bound: the next page follows the
    position of its last event.
    """

    events: Sequence[StoredEvent]
    found: bool
    more: bool = False
    position: int = 0
    """Position of the requested event when history holds it (0 otherwise): a node whose
    follower has not reached it yet must not hand the subscriber what it already had."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Events a shared backend's follower never saw: the stream moved past it (trimmed, or
    lost in a Redis restart). ``missed`` is how many, when known; ``resumed_at`` the id of
    the first event delivered after them, and ``first`` that event: only subscribers who
    may see it are told its id."""

    missed: int | None
    resumed_at: str
    first: StoredEvent | None = None


GapSink = Callable[[Gap], None]


@runtime_checkable
class ReportsGaps(Protocol):
    """A backend whose follower can fall behind a shared stream (Redis): the hub sets
    ``on_gap`` to hear about it, in order with the sink's batches."""

    on_gap: GapSink | None


@runtime_checkable
class AppendsAtOnce(Protocol):
    """A backend whose append waits for nothing (memory): the commit chain appends a batch
    in the callback that gathered it, without a task (one loop iteration sooner).
    ``append_now`` is ``append`` without the coroutine."""

    def append_now(self, events: Sequence[Event]) -> list[StoredEvent]: ...


class OutcomeUnknown(OSError):
    """The store did not answer (a timeout, a connection lost mid-command): the batch may
    or may not have been stored and delivered. Appending it again with the same ids is safe:
    an id already in history is not stored twice."""


class Backend(Protocol):
    """Ids, order and history; and, for shared backends, delivery across nodes.

    ``follow`` is a sink the backend calls with each batch in order, rather than an async
    iterator: a batch handed over in the same loop iteration as its append costs no await and
    keeps one publish burst one fan-out.
    """

    async def start(self, sink: Sink) -> int:
        """Begin feeding ``sink`` with every event accepted from now on, in order.

        Returns the position of the newest event already stored (0 if none): replay may read
        up to there before the sink has delivered anything (a restarted durable hub)."""
        ...

    async def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        """Accept a batch (one loop iteration's publishes): ids, positions, durable storage.

        Returns one StoredEvent per event given. An event whose id history already holds (a
        publisher's retry) is not stored or delivered again: its entry is the one stored
        first; so is a repeat of an id earlier in the same batch. An ``Appended`` says how
        many entries were such repeats."""
        ...

    async def broadcast(self, events: Sequence[Event]) -> list[StoredEvent]:
        """Deliver ``events`` to every node's sink without keeping them: no room in history,
        no replay, not a resume point. For notices about the moment (subscription events,
        the demo clock) that must never cost other topics their history. They take no
        position of their own: each carries one no newer than the newest stored event."""
        ...

    async def since(self, after: str | int, upto: int, limit: int = REPLAY_PAGE) -> Replay:
        """One page of the events after ``after`` with position <= ``upto``.

        ``after`` is a public id (``EARLIEST``: from the oldest retained), or the position of
        the last event of the previous page; either is ``found`` only while history still
        holds it, since otherwise what followed it may be gone. A page stops once its wire
        bytes reach ``limit`` (it holds one event at least), so replaying a long history
        never holds more than a page of it per subscriber."""
        ...

    @property
    def last_id(self) -> str:
        """Id of the newest event in history, or ``EARLIEST`` when history is empty."""
        ...

    async def close(self) -> None:
        """Stop following and release resources."""
        ...


def transient(event: Event, position: int, time: float) -> StoredEvent:
    """``event`` as broadcast: the position of the newest stored event (it takes none of its
    own) and no ``id:`` on the wire, so a client's Last-Event-ID stays on a stored event."""
    stored = StoredEvent.accept(
        dataclasses.replace(event, id=None), event.id or new_event_id(), position, time
    )
    return dataclasses.replace(
        stored, wire=encode_event(event.data, event=event.type, retry=event.retry)
    )


def broadcast_locally(
    sink: Sink | None, events: Sequence[Event], position: int
) -> list[StoredEvent]:
    """A one-process backend's broadcast: ``events`` made transient at ``position`` and handed
    to its own sink (what it stores, it alone delivers: --workers needs Redis)."""
    now = time.time()
    sent = [transient(event, position, now) for event in events]
    if sink is not None and sent:
        sink(sent)
    return sent


def new_event_id() -> str:
    """A unique IRI for an event whose publisher gave no id: a random (version 4) UUID URN,
    ``uuid.uuid4()``'s bits formatted here, at half its cost (one per publish)."""
    h = os.urandom(16).hex()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


# RFC 9562's variant: the top two bits of the 17th hex digit are 10, the other two random.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


__all__ = [
    "EARLIEST",
    "REPLAY_PAGE",
    "Appended",
    "Backend",
    "Gap",
    "GapSink",
    "HistoryUnavailable",
    "InvalidEvent",
    "OutcomeUnknown",
    "Replay",
    "ReportsGaps",
    "Sink",
    "broadcast_locally",
    "new_event_id",
    "transient",
]
