"""The two shapes of an update: what a publisher sends and what the hub has accepted."""

from __future__ import annotations

from dataclasses import dataclass, field

from .sse import encode_event


@dataclass(frozen=True, slots=True)
class Event:
    """An update to publish: its topics (canonical first, then alternates) and SSE fields."""

    topics: tuple[str, ...]
    data: str = ""
    private: bool = False
    id: str | None = None
    type: str | None = None
    retry: int | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event a backend has accepted: public id, position in publish order, wire bytes.

    ``position`` is strictly increasing per backend; replay and de-duplication use it, so a
    publisher's id may have any shape. ``wire`` is the SSE encoding, made once per node.
    """

    id: str
    position: int
    topics: tuple[str, ...]
    data: str
    private: bool
    type: str | None
    retry: int | None
    time: float
    wire: bytes = field(repr=False, compare=False)

    @classmethod
    def accept(cls, event: Event, id: str, position: int, time: float) -> StoredEvent:
        """Give ``event`` its id and position and encode it, once."""
        wire = encode_event(event.data, id=id, event=event.type, retry=event.retry)
        return cls(
            id,
            position,
            event.topics,
            event.data,
            event.private,
            event.type,
            event.retry,
            time,
            wire,
        )
