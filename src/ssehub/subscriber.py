"""One subscriber's side of the engine: what it asked for, what it may see, its stream, and
where it is in its life (``Phase``)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol


class Stream(Protocol):
    """What the engine needs from a connection; the server's protocol and the ASGI face
    implement it. ``write`` must not block: it buffers, and the face enforces the bound."""

    def write(self, data: bytes) -> None: ...

    def abort(self) -> None:
        """Drop the stream now, unsent bytes included (slow consumer): its connection over
        HTTP/1.1, its HTTP/2 stream (RST_STREAM) over HTTP/2."""
        ...

    async def drain(self) -> None:
        """Wait until the buffered bytes fall under the face's low-water mark."""
        ...


class Phase(enum.Enum):
    """A subscriber's life, in order; it only moves forward.

    ``NEW`` → ``REPLAYING`` (registered: live bytes are held for it while history is written)
    → ``LIVE`` (the fan-out writes to it directly) → ``CLOSED`` (left, dropped or expired;
    nothing more is written). ``CLOSED`` may follow any phase.
    """

    NEW = "new"
    REPLAYING = "replaying"
    LIVE = "live"
    CLOSED = "closed"


class SubscriberClosed(ConnectionResetError):
    """The subscriber was closed (it left, or was dropped) before its stream could start."""


Frame = Callable[[bytes], bytes]
"""A face's body framing (HTTP/1.1 chunks): applied once per view, never per subscriber."""

ViewKey = tuple[frozenset[str], frozenset[str] | None, Frame | None]


class Subscriber:
    """A subscription of one connection: topic selectors and the private-update claims.

    ``allowed`` holds the selectors of the token's ``mercure.subscribe`` claim; ``None``
    (anonymous) sees no private update. Subscribers with equal keys share one view and so
    one buffer per fan-out. ``held`` gathers live bytes while the phase is ``REPLAYING``.
    ``frame`` wraps every body write of the hub (a chunked HTTP/1.1 stream); it is part of
    the key, so a view frames its buffer once for all its members.
    """

    __slots__ = (
        "allowed",
        "frame",
        "held",
        "held_size",
        "key",
        "phase",
        "selectors",
        "sent",
        "stream",
        "write",
    )

    def __init__(
        self,
        stream: Stream,
        selectors: tuple[str, ...],
        allowed: frozenset[str] | None,
        write: Callable[[bytes], None] | None = None,
        frame: Frame | None = None,
    ) -> None:
        self.stream = stream
        # What the fan-out loop calls; a face may pass its transport's own ``write`` so that a
        # delivery is one call into the event loop, with no Python frame of ours in between.
        self.write: Callable[[bytes], None] = write or stream.write
        self.selectors = selectors
        self.allowed = allowed
        self.frame = frame
        self.key: ViewKey = (frozenset(selectors), allowed, frame)
        self.phase = Phase.NEW
        self.held: list[bytes] = []
        self.held_size = 0
        self.sent = 0  # LIVE: the offset in its view's log written to it so far

    @property
    def live(self) -> bool:
        """Whether the fan-out writes to it directly (so a full buffer means a slow reader)."""
        return self.phase is Phase.LIVE
