"""One HTTP/2 stream's outgoing side: HEADERS, DATA frames within the flow-control windows,
a bounded backlog for what the windows cannot take yet, and a subscriber's life on it (its
start, token expiry, write and dispatch timeouts).

The connection (``H2Link``, implemented by ``H2Protocol``) owns the h2 state machine and
hands what h2 queued to the transport once per loop iteration; a stream only asks it to
(``arm``), so a fan-out over many streams of one connection stays one transport write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError, StreamClosedError

from ..app import App, OpenedStream, Response
from ..contract import HistoryUnavailable, Replay
from ..errors import field_value
from .h2_data import send_data
from .h2_heads import Fields, send_headers
from .h2_pad import Pads
from .http import NO_CONTENT

if TYPE_CHECKING:
    from h2.connection import H2Connection

    from ..hub import Preamble
    from ..subscriber import Subscriber

log = logging.getLogger("ssehub.server")


class H2Link(Protocol):
    """What a stream and the request side use of their HTTP/2 connection, so neither imports
    ``H2Protocol``."""

    app: App
    loop: asyncio.AbstractEventLoop
    h2: H2Connection
    address: str | None
    paused: bool  # the transport is over its high-water mark: stream writes wait
    armed: bool  # a flush is due this iteration (``arm`` was called)
    closed: bool
    draining: bool
    streams: dict[int, H2Stream]  # answers being sent and event streams
    waiting: dict[H2Stream, None]  # streams with a backlog, in order
    pads: Pads

    def arm(self) -> None:
        """Flush what h2 queued at the end of this loop iteration (once, however many ask)."""
        ...

    def flush(self) -> None: ...

    def forget(self, stream: H2Stream) -> None: ...

    def settled(self) -> None: ...

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    def goaway(self, code: ErrorCodes = ErrorCodes.NO_ERROR) -> None: ...


def send_head(
    conn: H2Link,
    stream_id: int,
    status: int,
    headers: list[tuple[str, str]],
    length: int | None,
    end: bool,
) -> None:
    """HEADERS for a response on ``stream_id``."""
    key = (status, tuple(headers), length)
    fields = _fields.get(key)
    if fields is None:
        fields = _head_fields(status, headers, length)
        if sum(len(n) + len(v) for n, v in fields) <= _SMALL:  # not an echoed long id
            _fields[key] = fields
            if len(_fields) > _KEEP:
                _fields.clear()
    send_headers(conn.h2, stream_id, fields, end)
    conn.arm()


_KEEP = 256  # response heads kept at most (every event stream's is the same, or nearly)
_SMALL = 2048  # bytes of names and values: a longer head is not kept
_fields: dict[tuple[int, tuple[tuple[str, str], ...], int | None], Fields] = {}


def _head_fields(status: int, headers: list[tuple[str, str]], length: int | None) -> Fields:
    fields = [(b":status", b"%d" % status), (b"server", b"ssehub")]
    # HTTP/2 field names are lower case; the one place a header reaches this wire.
    fields.extend((n.lower().encode(), field_value(v).encode()) for n, v in headers)
    if length is not None:
        fields.append((b"content-length", b"%d" % length))
    return tuple(fields)


def answer(conn: H2Link, stream_id: int, response: Response) -> None:
    """Send a complete response on ``stream_id`` (its body as flow control allows)."""
    if conn.closed:
        return
    body = response.content
    length = None if response.status in NO_CONTENT else len(response.body)
    try:
        send_head(conn, stream_id, response.status, response.headers, length, not body)
    except ProtocolError:  # StreamClosedError among them
        return  # the client gave up on it
    if body:
        stream = H2Stream(conn, stream_id)
        conn.streams[stream_id] = stream
        stream.write(body)
        stream.end()
    else:
        conn.settled()


def open_stream(conn: H2Link, stream_id: int, opened: OpenedStream) -> None:
    """Start the event stream ``opened`` on ``stream_id``."""
    stream = H2Stream(conn, stream_id)
    # No framing: DATA frames delimit the body (HTTP/2 has no chunked encoding).
    stream.sub = opened.subscriber(stream, stream.write)
    conn.streams[stream_id] = stream
    settings = conn.app.settings
    if settings.write_timeout:
        stream.ends_at = conn.loop.time() + settings.write_timeout
    stream.start(opened)


class H2Stream:
    """One HTTP/2 stream's outgoing side: an answer's body, or a subscriber's event stream
    (the hub's ``Stream``)."""

    __slots__ = (
        "backlog",
        "backlog_size",
        "closed",
        "conn",
        "drained",
        "ending",
        "ends_at",
        "expiry",
        "id",
        "sent",
        "stamped",
        "starting",
        "stuck_since",
        "sub",
        "watched",
    )

    def __init__(self, conn: H2Link, stream_id: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.backlog: list[bytes] = []  # waiting for flow-control window
        self.backlog_size = 0
        self.closed = False
        self.ending = False  # end the stream once the backlog is out
        self.sub: Subscriber | None = None
        self.drained: asyncio.Future[None] | None = None
        self.starting: asyncio.Task[None] | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.ends_at = 0.0
        self.sent = 0  # bytes handed to h2, for the dispatch timeout
        self.stamped = 0  # the connection's last transport write with data of ours
        self.watched = 0
        self.stuck_since = 0.0

    # -- Stream, for the hub -------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        conn = self.conn
        if self.backlog or conn.paused:
            self.backlog.append(data)
            self.backlog_size += len(data)
            sub = self.sub
            hub = conn.app.hub
            if self.backlog_size > hub.max_buffer and sub is not None and sub.live:
                # Live and past the bound: a slow consumer. Reset it rather than slow anyone.
                log.info("resetting a slow HTTP/2 stream (over %d unsent bytes)", hub.max_buffer)
                hub.drop_slow(sub)
            return
        self._send(data)

    def abort(self) -> None:
        """Reset this stream (slow consumer); the connection's other streams carry on."""
        self.reset(ErrorCodes.CANCEL)

    async def drain(self) -> None:
        while True:
            if self.closed:
                raise ConnectionResetError("subscriber went away")
            if not self.backlog and not self.conn.paused:
                return
            if self.drained is None or self.drained.done():
                self.drained = self.conn.loop.create_future()
            await self.drained

    def wake(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # -- the wire ------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        """Hand ``data`` to h2 as one DATA frame when the windows allow, else backlog it."""
        conn = self.conn
        try:
            if send_data(conn.h2, self.id, data):
                self.sent += len(data)
                self.stamp()
                if not conn.armed:  # once per connection per fan-out, not once per stream
                    conn.arm()
                return
        except (StreamClosedError, ProtocolError):
            conn.forget(self)
            return
        self.backlog.append(data)
        self.backlog_size += len(data)
        self.pump()

    def stamp(self) -> None:
        """This stream has data in the connection's next write (see ``h2_pad``)."""
        pads = self.conn.pads
        if self.stamped != pads.writes:
            self.stamped = pads.writes
            pads.fresh += 1

    def pump(self) -> None:
        """Send what the windows allow of the backlog; end the stream if it was ending."""
        if self.closed:
            return
        conn = self.conn
        h2 = conn.h2
        backlog = self.backlog
        try:
            while backlog and not conn.paused:
                room = min(h2.local_flow_control_window(self.id), h2.max_outbound_frame_size)
                if room <= 0:
                    break
                data = backlog[0]
                if len(data) <= room:
                    backlog.pop(0)
                else:
                    backlog[0] = data[room:]
                    data = data[:room]
                h2.send_data(self.id, data)
                self.backlog_size -= len(data)
                self.sent += len(data)
                self.stamp()
                conn.arm()
            if backlog:
                conn.waiting[self] = None
                return
            conn.waiting.pop(self, None)
            if self.ending:
                h2.end_stream(self.id)
                conn.arm()
                conn.forget(self)
                return
        except (StreamClosedError, ProtocolError):  # never into the fan-out that called us
            conn.forget(self)
            return
        if not conn.paused:
            self.wake()

    def end(self) -> None:
        """END_STREAM once what is backlogged is out."""
        self.ending = True
        self.pump()

    def reset(self, code: ErrorCodes) -> None:
        if self.closed:
            return
        with contextlib.suppress(StreamClosedError):  # the peer closed it already
            self.conn.h2.reset_stream(self.id, code)
        self.conn.arm()
        self.conn.forget(self)

    # -- a subscriber's stream -----------------------------------------------------------------

    def start(self, opened: OpenedStream) -> None:
        """Subscribe: at once when there is nothing to replay (no task, and the head goes out
        with the connection's next write), else in a task that may wait for history."""
        if opened.last_event_id is not None:
            self.starting = self.conn.spawn(self._run(opened))
            return
        assert self.sub is not None
        try:
            self.conn.app.hub.subscribe_now(self.sub, self._preamble(opened))
        except (ConnectionResetError, ProtocolError):  # it left (SubscriberClosed too)
            self.conn.forget(self)
            return
        except Exception:  # a fault of the hub's: this stream ends, not the whole read
            log.exception("a stream failed to start")
            self.reset(ErrorCodes.INTERNAL_ERROR)
            return
        self._started(opened)

    def _preamble(self, opened: OpenedStream) -> Preamble:
        """What the hub calls once the replay is known: the head, then the first bytes."""

        def preamble(replay: Replay | None) -> bytes:
            start = opened.head(replay)
            send_head(self.conn, self.id, 200, start.headers, None, False)
            return start.first

        return preamble

    async def _run(self, opened: OpenedStream) -> None:
        """Subscribe (replay, then live); refuse with 503 if history is unavailable."""
        sub = self.sub
        assert sub is not None
        conn = self.conn
        try:
            await conn.app.hub.subscribe(sub, opened.last_event_id, self._preamble(opened))
        except (ConnectionResetError, StreamClosedError):  # it left (SubscriberClosed too)
            return
        except HistoryUnavailable as exc:  # raised before the stream's head was written
            log.warning("refusing a subscriber: %s", exc)
            self.starting = None
            if not self.closed:
                conn.forget(self)
                answer(conn, self.id, conn.app.unavailable(exc, opened))
                conn.flush()
            return
        finally:
            self.starting = None
        self._started(opened)

    def _started(self, opened: OpenedStream) -> None:
        if opened.expires is not None and not self.closed:
            self.expiry = self.conn.loop.call_later(opened.expires, self._expired)

    def _expired(self) -> None:
        log.info("closing a subscriber whose token expired")
        self.expiry = None
        self.end_stream()

    def end_stream(self) -> None:
        """End an event stream cleanly: what is backlogged goes first, then END_STREAM."""
        if self.sub is not None:
            self.conn.app.hub.detach(self.sub)
        self.end()

    def check(self, now: float, dispatch_timeout: float) -> None:
        """The sweep's look at a subscriber's stream: write timeout, then dispatch timeout
        (bytes waiting for window and none taken for a while)."""
        if self.sub is None:
            return
        if self.ends_at and now >= self.ends_at:
            self.end_stream()
            return
        if not dispatch_timeout:
            return
        if self.backlog and self.sent == self.watched:  # waiting, none taken
            if not self.stuck_since:
                self.stuck_since = now
            elif now - self.stuck_since >= dispatch_timeout:
                log.info("resetting an HTTP/2 stream that read nothing for %gs", dispatch_timeout)
                self.conn.app.hub.drop_slow(self.sub)
        else:
            self.stuck_since = 0.0
        self.watched = self.sent
