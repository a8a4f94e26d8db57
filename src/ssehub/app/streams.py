"""A subscribe the app has accepted, before any face has given it a connection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..contract import EARLIEST, Replay
from ..mercure import LINK, gap_notice
from ..subscriber import Frame, Stream, Subscriber
from .answers import Headers

_STREAM_HEADERS = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0"),
    ("X-Accel-Buffering", "no"),
    ("Link", LINK),
)


@dataclass(frozen=True, slots=True)
class StreamHead:
    """A stream's response headers and first body bytes, once its replay is known."""

    headers: list[tuple[str, str]]
    first: bytes


@dataclass(slots=True)
class OpenedStream:
    """An authorized subscription: what it asked for, what it may see, how it starts.

    A face gives it a connection with ``subscriber()``, has the hub subscribe that, and writes
    ``head(replay)`` first (the response's Last-Event-ID header depends on the replay).
    """

    selectors: tuple[str, ...]
    allowed: frozenset[str] | None
    last_event_id: str | None
    expires: float | None  # seconds until the token expires
    cors: Headers
    first: bytes  # the opening comment, and the retry field when configured
    on_open: Callable[[Subscriber], None]
    resumed_header: str = "Last-Event-ID"  # Mercure 1.0 answers Mercure-Last-Event-ID

    def subscriber(
        self,
        stream: Stream,
        write: Callable[[bytes], None] | None = None,
        frame: Frame | None = None,
    ) -> Subscriber:
        """The engine's subscriber for this stream on ``stream`` (``write``: the fast path;
        ``frame``: the face's body framing, e.g. HTTP/1.1 chunks)."""
        sub = Subscriber(stream, self.selectors, self.allowed, write=write, frame=frame)
        self.on_open(sub)
        return sub

    def head(self, replay: Replay | None) -> StreamHead:
        headers = [*_STREAM_HEADERS, *self.cors]
        gap = b""
        requested = self.last_event_id
        if requested is not None and replay is not None:
            headers.append((self.resumed_header, requested if replay.found else EARLIEST))
            if not replay.found:
                gap = gap_notice(requested, replay.events[0].id if replay.events else None)
        return StreamHead(headers, self.first + gap)
