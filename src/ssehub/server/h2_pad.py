"""Keeping every reader of a multiplexed HTTP/2 client moving.

httpx (httpcore) reads an HTTP/2 connection in one task at a time, under a lock handed to
waiters in turn, and a task that takes it with nothing of its own queued blocks in a read.
When bytes for stream B are read by a task that then leaves (its stream ended, or its
consumer stopped), the lock goes to the next waiter, A, which has nothing and reads: B's
task waits behind A until the connection carries more, which on a quiet connection is the
next heartbeat, after a 5 s ReadTimeout. Ten streams and publishes answered on the same
connection stall that way, and so does one event for the last of ten streams.

So a moment after a write that left some event streams of the connection out, each of
those gets an SSE comment (``:``, ignored by every reader): every waiter then finds
something of its own and none blocks, so the lock reaches B. A second look a moment later
covers the streams the first left out (the ones that had data: their tasks may be waiting
again). A write that reached every stream, as a fan-out of one topic does, costs one
comparison; a comment is never traffic that calls for more comments.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from h2.connection import H2Connection

    from ..subscriber import Subscriber


PAD_AFTER = 0.02  # seconds after a write: long enough for the client to have read it

_COMMENT = b":\n"


class _Padded(Protocol):  # what a look reads of an H2Stream
    stamped: int
    sub: Subscriber | None
    backlog: list[bytes]

    def write(self, data: bytes) -> None: ...


class _Conn(Protocol):  # what the looks use of an H2Protocol
    loop: asyncio.AbstractEventLoop
    h2: H2Connection
    transport: asyncio.Transport
    closed: bool

    @property
    def streams(self) -> Mapping[int, _Padded]: ...


class Pads:
    """The write count of one connection and its looks; streams stamp ``writes`` in
    ``H2Stream.stamp`` when they hand h2 data."""

    __slots__ = ("_conn", "_timer", "again", "fresh", "reached", "writes")

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn
        self._timer: asyncio.TimerHandle | None = None
        self.writes = 1  # the number of the transport write being gathered
        self.fresh = 0  # streams with data in it
        self.reached = 0  # streams with data in the last one
        self.again = False  # whether the next look follows a look's own comments

    def flushed(self) -> None:
        """A transport write of real traffic went out: look in a moment."""
        self.writes += 1
        self.reached, self.fresh = self.fresh, 0
        self.again = False
        if self._timer is None and len(self._conn.streams) > 1:
            self._timer = self._conn.loop.call_later(PAD_AFTER, self._look)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _look(self) -> None:
        self._timer = None
        conn = self._conn
        if conn.closed or conn.transport.is_closing() or not self.pad():
            return
        conn.transport.write(conn.h2.data_to_send())  # not flush(): a pad is no traffic
        if self.again:
            self._timer = conn.loop.call_later(PAD_AFTER, self._look)

    def pad(self) -> bool:
        """Comment on each live event stream the last write left out; whether any was."""
        streams = tuple(self._conn.streams.values())
        last = self.writes - 1
        second, self.again = self.again, False
        if self.reached >= len(streams) and not second:
            return False  # it reached every stream (answers in flight count as streams)
        padded = False
        for stream in streams:
            sub = stream.sub
            if stream.stamped != last and sub is not None and sub.live and not stream.backlog:
                stream.write(_COMMENT)
                padded = True
        self.writes += 1
        self.reached, self.fresh = self.fresh, 0
        self.again = padded and not second
        return padded
