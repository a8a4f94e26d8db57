"""The engine's side of storage: the one contract every backend keeps (append, follow, since).

It lives with the engine, which owns the delivery guarantees; backends implement it and import
it from here, never the reverse.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .events import Event, StoredEvent
from .mercure import EARLIEST

Sink = Callable[[Sequence[StoredEvent]], None]
"""Receives every accepted event of this backend, in order, in batches, on the hub's loop."""


class HistoryUnavailable(Exception):
    """The backend could not read history (its store is away); the face answers 503."""


@dataclass(frozen=True, slots=True)
class Replay:
    """What history holds after a requested id.

    ``found`` is False when the id is not (or no longer) in history: the events then start at
    the oldest one retained, and the subscriber must be told it may have missed some.
    """

    events: Sequence[StoredEvent]
    found: bool


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
        """Accept a batch (one loop iteration's publishes): ids, positions, durable storage."""
        ...

    async def since(self, last_id: str, upto: int) -> Replay:
        """Events after ``last_id`` (or all retained for ``EARLIEST``) with position <= upto."""
        ...

    @property
    def last_id(self) -> str:
        """Id of the newest event in history, or ``EARLIEST`` when history is empty."""
        ...

    async def close(self) -> None:
        """Stop following and release resources."""
        ...


def new_event_id() -> str:
    """A unique IRI for an event whose publisher gave no id."""
    return f"urn:uuid:{uuid.uuid4()}"


__all__ = ["EARLIEST", "Backend", "HistoryUnavailable", "Replay", "Sink", "new_event_id"]
