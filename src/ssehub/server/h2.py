"""HTTP/2 connections (the sans-I/O ``h2`` state machine): many requests and streams on one.

Browsers open six HTTP/1.1 connections per origin at most, so a seventh tab on an SSE page
stalls; over HTTP/2 every EventSource of an origin shares one connection. Each subscribe is
one HTTP/2 stream whose ``write`` (what the hub's fan-out calls) becomes a DATA frame in the
h2 state machine, and the connection hands everything h2 has to send to its transport once
per loop iteration: a fan-out over N streams of one connection is one ``transport.write``
carrying one DATA frame per stream.

HTTP/2 flow control is honoured: bytes a stream's window (or the connection's) cannot take
wait in that stream's backlog, and so do all writes while the transport's own buffer is over
its high-water mark. A live stream whose backlog passes the hub's bound is a slow consumer:
it is reset (RST_STREAM), like an HTTP/1.1 connection past its high-water mark, and the
others on the connection carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings

from ..app import App, DeferredPublish, OpenedStream, Request, Response, error_response
from ..contract import HistoryUnavailable, Replay
from ..errors import HubError, field_value
from .http import NO_CONTENT, text
from .registry import ConnectionRegistry

if TYPE_CHECKING:
    from ..subscriber import Subscriber

log = logging.getLogger("ssehub.server")

MAX_STREAMS = 128
"""Concurrent streams one client may open on a connection (SETTINGS_MAX_CONCURRENT_STREAMS):
every EventSource of its tabs, and its requests in flight."""

_HIGH_WATER = 256 * 1024  # transport bytes unsent past which stream writes wait in backlogs

MAX_RESETS = 100
"""Streams a client may cancel in ``RESET_WINDOW`` seconds before its connection is told to go
away (ENHANCE_YOUR_CALM): opening and resetting streams at once is free for the client and
costs the hub a subscribe each (the "rapid reset" attack). A tab closing its EventSource
resets one."""
RESET_WINDOW = 10.0


class _Incoming:
    """A request whose head has arrived and whose body is still coming."""

    __slots__ = ("body", "refused", "request", "size")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.body: list[bytes] = []
        self.size = 0
        self.refused = False  # answered already (a limit): what it still sends is dropped


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
        "starting",
        "stuck_since",
        "sub",
        "watched",
    )

    def __init__(self, conn: H2Protocol, stream_id: int) -> None:
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
        conn.send(self, data)

    def abort(self) -> None:
        """Reset this stream (slow consumer); the connection's other streams carry on."""
        self.conn.reset(self, ErrorCodes.CANCEL)

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


class H2Protocol(asyncio.Protocol):
    """The asyncio protocol of one HTTP/2 client connection (TLS with ALPN ``h2``, or h2c
    with prior knowledge)."""

    __slots__ = (
        "_deadline",
        "_draining",
        "_flush_handle",
        "_incoming",
        "_pending",
        "_refusal",
        "_resets",
        "_resets_since",
        "_waiting",
        "address",
        "app",
        "closed",
        "h2",
        "loop",
        "paused",
        "registry",
        "streams",
        "transport",
    )

    def __init__(self, app: App, registry: ConnectionRegistry) -> None:
        self.app = app
        self.registry = registry
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport  # from connection_made on
        self.address: str | None = None  # counted against the per-address limit
        config = H2Configuration(client_side=False, header_encoding=None)
        self.h2 = H2Connection(config)
        self.h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: app.settings.max_head_size,
                SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.streams: dict[int, H2Stream] = {}  # answers being sent and event streams
        self._incoming: dict[int, _Incoming] = {}
        self._waiting: dict[H2Stream, None] = {}  # streams with a backlog, in order
        self._flush_handle: asyncio.Handle | None = None
        self.paused = False
        self.closed = False
        self._draining = False
        self._refusal: HubError | None = None
        self._deadline = 0.0
        self._pending = 0  # publishes waiting for their backend
        self._resets = 0  # streams the client cancelled since _resets_since
        self._resets_since = 0.0

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)
        settings = self.app.settings
        # Refused over the limits: its first request is answered with the reason, then
        # GOAWAY; not registered, so not swept: its own timer ends it.
        self._refusal = self.registry.admit(self)
        if self._refusal is not None:
            self.loop.call_later(settings.head_timeout, self._goaway)
        self._deadline = self.loop.time() + settings.head_timeout
        self.h2.initiate_connection()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.registry.release(self)
        for stream in list(self.streams.values()):
            self._forget(stream)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            log.info("closing an HTTP/2 connection: %s", exc)
            self._shut()  # h2 has queued a GOAWAY saying why
            return
        for event in events:
            if self.closed:
                return  # a refusal or the peer's GOAWAY ended it: h2 sends nothing more
            if isinstance(event, RequestReceived):
                self._request(event)
            elif isinstance(event, DataReceived):
                self._body(event)
            elif isinstance(event, StreamEnded):
                self._complete(event.stream_id)
            elif isinstance(event, WindowUpdated):
                self._window(event.stream_id)
            elif isinstance(event, StreamReset):
                self._reset_by_peer(event.stream_id)
            elif isinstance(event, RemoteSettingsChanged):
                self._window(0)  # a larger initial window opens every stream
            elif isinstance(event, ConnectionTerminated):
                self._shut()
                return
        self._flush()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.paused = True  # stream writes wait in backlogs, where their bound is enforced
        # A client that does not read has nothing more to say either: what it sends (PINGs,
        # SETTINGS, requests) would make h2 queue answers past every bound.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if not self.closed:
            self.transport.resume_reading()
        for stream in list(self.streams.values()):
            self._pump(stream)

    # -- requests ------------------------------------------------------------------------------

    def _request(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        self._deadline = 0.0
        if self._draining:
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        settings = self.app.settings
        method = b"GET"
        target = b"/"
        headers: dict[str, str] = {}
        size = 0
        for name, value in event.headers or ():
            raw_name, raw_value = bytes(name), bytes(value)
            size += len(raw_name) + len(raw_value) + 4
            if raw_name == b":method":
                method = raw_value
            elif raw_name == b":path":
                target = raw_value
            elif raw_name == b":authority":
                headers.setdefault("host", text(raw_value))
            elif not raw_name.startswith(b":"):
                key = raw_name.decode("latin-1")
                value_text = text(raw_value)
                old = headers.get(key)
                if old is None:
                    headers[key] = value_text
                else:
                    headers[key] = old + ("; " if key == "cookie" else ", ") + value_text
        path, _, query = target.partition(b"?")
        request = Request(
            method.decode("ascii", "replace"),
            text(path or b"/"),
            text(query),
            headers,
            b"",
            True,
            "2",
            self.address,
        )
        incoming = _Incoming(request)
        self._incoming[stream_id] = incoming
        refusal = self._refusal
        if refusal is None and len(target) > settings.max_url_length:
            refusal = HubError(414, f"URL longer than {settings.max_url_length} bytes")
        if refusal is None and size > settings.max_head_size:
            refusal = HubError(431, "request head too large")
        length = headers.get("content-length", "")
        if refusal is None and length.isdigit() and int(length) > settings.max_body_size:
            refusal = HubError(413, f"body larger than {settings.max_body_size} bytes")
        if refusal is not None:
            self._refuse(stream_id, incoming, refusal)

    def _body(self, event: DataReceived) -> None:
        # Every byte read is acknowledged, so the peer's windows never close on us; what the
        # body limit refuses is dropped, not kept.
        self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        incoming = self._incoming.get(event.stream_id)
        if incoming is None or incoming.refused or event.data is None:
            return
        incoming.size += len(event.data)
        limit = self.app.settings.max_body_size
        if incoming.size > limit:
            error = HubError(413, f"body larger than {limit} bytes")
            self._refuse(event.stream_id, incoming, error)
            return
        incoming.body.append(bytes(event.data))

    def _refuse(self, stream_id: int, incoming: _Incoming, error: HubError) -> None:
        incoming.refused = True
        incoming.body = []
        self.app.count(error)
        self._answer(stream_id, error_response(error))
        if error is self._refusal:  # a connection over the limits: one answer, then away
            self._goaway()
        # Not RST_STREAM(NO_ERROR) to stop the rest of the body (RFC 9113 8.1): httpx fails
        # the whole request on it, losing this answer. The rest is read and dropped; the
        # stream stays counted against MAX_STREAMS until the client ends it.

    def _complete(self, stream_id: int) -> None:
        incoming = self._incoming.pop(stream_id, None)
        if incoming is None or incoming.refused:
            return
        request = incoming.request
        request.body = b"".join(incoming.body)
        answer = self.app.handle(request)
        if isinstance(answer, OpenedStream):
            self._open(stream_id, answer)
        elif isinstance(answer, Response):
            self._answer(stream_id, answer)
        elif answer.done():
            self._answer(stream_id, answer.response())
        else:
            self._pending += 1
            publish: DeferredPublish = answer

            def answered() -> None:
                self._pending -= 1
                self._answer(stream_id, publish.response())
                self._flush()
                self._settled()

            answer.when_done(answered)

    def _answer(self, stream_id: int, response: Response) -> None:
        """Send a complete response on ``stream_id`` (its body as flow control allows)."""
        if self.closed:
            return
        body = response.content
        length = None if response.status in NO_CONTENT else len(response.body)
        try:
            self._head(stream_id, response.status, response.headers, length, not body)
        except ProtocolError:  # StreamClosedError among them
            return  # the client gave up on it
        if body:
            stream = H2Stream(self, stream_id)
            self.streams[stream_id] = stream
            stream.write(body)
            self._end(stream)
        else:
            self._settled()

    def _head(
        self,
        stream_id: int,
        status: int,
        headers: list[tuple[str, str]],
        length: int | None,
        end: bool,
    ) -> None:
        fields = [(b":status", b"%d" % status), (b"server", b"ssehub")]
        # HTTP/2 field names are lower case; the one place a header reaches this wire.
        fields.extend((n.lower().encode(), field_value(v).encode()) for n, v in headers)
        if length is not None:
            fields.append((b"content-length", b"%d" % length))
        self.h2.send_headers(stream_id, fields, end_stream=end)
        self._arm()

    # -- streams -------------------------------------------------------------------------------

    def _open(self, stream_id: int, opened: OpenedStream) -> None:
        stream = H2Stream(self, stream_id)
        # No framing: DATA frames delimit the body (HTTP/2 has no chunked encoding).
        stream.sub = opened.subscriber(stream, stream.write)
        self.streams[stream_id] = stream
        settings = self.app.settings
        if settings.write_timeout:
            stream.ends_at = self.loop.time() + settings.write_timeout
        stream.starting = self.registry.spawn(self._run_stream(stream, opened))

    async def _run_stream(self, stream: H2Stream, opened: OpenedStream) -> None:
        sub = stream.sub
        assert sub is not None

        def preamble(replay: Replay | None) -> bytes:
            start = opened.head(replay)
            self._head(stream.id, 200, start.headers, None, False)
            return start.first

        try:
            await self.app.hub.subscribe(sub, opened.last_event_id, preamble)
        except (ConnectionResetError, StreamClosedError):  # it left (SubscriberClosed too)
            return
        except HistoryUnavailable as exc:  # raised before the stream's head was written
            log.warning("refusing a subscriber: %s", exc)
            stream.starting = None
            if not stream.closed:
                self._forget(stream)
                self._answer(stream.id, self.app.unavailable(exc, opened))
                self._flush()
            return
        finally:
            stream.starting = None
        if opened.expires is not None and not stream.closed:
            stream.expiry = self.loop.call_later(opened.expires, self._expired, stream)

    def _expired(self, stream: H2Stream) -> None:
        log.info("closing a subscriber whose token expired")
        stream.expiry = None
        self._end_stream(stream)

    def _end_stream(self, stream: H2Stream) -> None:
        """End an event stream cleanly: what is backlogged goes first, then END_STREAM."""
        if stream.sub is not None:
            self.app.hub.detach(stream.sub)
        self._end(stream)

    # -- the wire ------------------------------------------------------------------------------

    def send(self, stream: H2Stream, data: bytes) -> None:
        """Hand ``data`` to h2 as one DATA frame when the windows allow, else backlog it."""
        h2 = self.h2
        try:
            window = h2.local_flow_control_window(stream.id)
        except (StreamClosedError, ProtocolError):
            self._forget(stream)
            return
        size = len(data)
        if size <= window and size <= h2.max_outbound_frame_size:
            h2.send_data(stream.id, data)
            stream.sent += size
            if self._flush_handle is None:
                self._flush_handle = self.loop.call_soon(self._flush)
            return
        stream.backlog.append(data)
        stream.backlog_size += size
        self._pump(stream)

    def _pump(self, stream: H2Stream) -> None:
        """Send what the windows allow of ``stream``'s backlog; end it if it was ending."""
        if stream.closed:
            return
        h2 = self.h2
        backlog = stream.backlog
        try:
            while backlog and not self.paused:
                room = min(h2.local_flow_control_window(stream.id), h2.max_outbound_frame_size)
                if room <= 0:
                    break
                data = backlog[0]
                if len(data) <= room:
                    backlog.pop(0)
                else:
                    backlog[0] = data[room:]
                    data = data[:room]
                h2.send_data(stream.id, data)
                stream.backlog_size -= len(data)
                stream.sent += len(data)
                self._arm()
            if backlog:
                self._waiting[stream] = None
                return
            self._waiting.pop(stream, None)
            if stream.ending:
                h2.end_stream(stream.id)
                self._arm()
                self._forget(stream)
                return
        except (StreamClosedError, ProtocolError):  # never into the fan-out that called us
            self._forget(stream)
            return
        if not self.paused:
            stream.wake()

    def _window(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                self._pump(stream)
            return
        for stream in list(self._waiting):
            self._pump(stream)

    def _end(self, stream: H2Stream) -> None:
        stream.ending = True
        self._pump(stream)

    def reset(self, stream: H2Stream, code: ErrorCodes) -> None:
        if stream.closed:
            return
        with contextlib.suppress(StreamClosedError):  # the peer closed it already
            self.h2.reset_stream(stream.id, code)
        self._arm()
        self._forget(stream)

    def _reset_by_peer(self, stream_id: int) -> None:
        now = self.loop.time()
        if now - self._resets_since > RESET_WINDOW:
            self._resets, self._resets_since = 0, now
        self._resets += 1
        if self._resets > MAX_RESETS:
            log.info("closing an HTTP/2 connection that reset %d streams at once", self._resets)
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM)
            return
        self._incoming.pop(stream_id, None)
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._forget(stream)

    def _forget(self, stream: H2Stream) -> None:
        """The stream is over, cleanly or not: the hub and the subscriptions API hear of it."""
        if stream.closed:
            return
        sub = stream.sub
        if sub is not None:
            self.app.hub.detach(sub)
            self.app.stream_closed(sub)
        stream.closed = True
        stream.backlog, stream.backlog_size = [], 0
        self.streams.pop(stream.id, None)
        self._waiting.pop(stream, None)
        if stream.expiry is not None:
            stream.expiry.cancel()
            stream.expiry = None
        if stream.starting is not None and not stream.starting.done():
            stream.starting.cancel()
        stream.wake()
        self._settled()

    def _settled(self) -> None:
        """A stream is done: when draining, maybe close; when nothing is left, idle from now."""
        if self._draining:
            self._close_if_done()
        elif not self.streams and not self._incoming and not self._pending and not self.closed:
            self._deadline = self.loop.time() + self.app.settings.keep_alive_timeout

    def _arm(self) -> None:
        if self._flush_handle is None and not self.closed:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """One transport write with every frame h2 has queued since the last one."""
        self._flush_handle = None
        data = self.h2.data_to_send()
        if data and not self.closed and not self.transport.is_closing():
            self.transport.write(data)

    # -- deadlines and shutdown ----------------------------------------------------------------

    def check(self, now: float) -> None:
        """Called by the app's sweep each second: enforce every time limit of this connection."""
        if self.closed:
            return
        settings = self.app.settings
        idle = not self.streams and not self._incoming and not self._pending
        if self._deadline and now >= self._deadline and idle:
            self._goaway()
            return
        for stream in list(self.streams.values()):
            if stream.sub is None:
                continue
            if stream.ends_at and now >= stream.ends_at:
                self._end_stream(stream)
                continue
            if not settings.dispatch_timeout:
                continue
            if stream.backlog and stream.sent == stream.watched:  # waiting, none taken
                if not stream.stuck_since:
                    stream.stuck_since = now
                elif now - stream.stuck_since >= settings.dispatch_timeout:
                    log.info(
                        "resetting an HTTP/2 stream that read nothing for %gs",
                        settings.dispatch_timeout,
                    )
                    self.app.hub.drop_slow(stream.sub)
            else:
                stream.stuck_since = 0.0
            stream.watched = stream.sent
        self._flush()

    def drain_close(self) -> None:
        """Shutdown: end every event stream cleanly, answer what is in flight (new requests
        are refused), then GOAWAY and close."""
        if self.closed:
            return
        self._draining = True
        for stream in list(self.streams.values()):
            if stream.sub is not None:
                self._end_stream(stream)
        self._flush()
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self.streams or self._pending or self.closed:
            return
        if any(not i.refused for i in self._incoming.values()):
            return  # a request still coming
        self._goaway()

    def _goaway(self, code: ErrorCodes = ErrorCodes.NO_ERROR) -> None:
        """GOAWAY, then close once it is sent (h2 sends nothing on a connection after it, so
        it comes last)."""
        if self.closed:
            return
        self.h2.close_connection(code, last_stream_id=self.h2.highest_inbound_stream_id)
        self._shut()

    def _shut(self) -> None:
        """h2 will send nothing more (GOAWAY sent or received, or a protocol error): send what
        it queued, forget every stream so no write reaches it, and close."""
        if self.closed:
            return
        self._flush()
        self.closed = True
        for stream in list(self.streams.values()):
            self._forget(stream)
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()
