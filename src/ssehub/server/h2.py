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

Cut like the HTTP/1.1 face: ``h2_stream`` holds a stream's outgoing side (DATA framing,
windows, backlog, a subscriber's life on it), ``h2_requests`` the request side (header
block to ``Request``, limits, answers, the rapid-reset bound); this module the connection:
the h2 state machine, the one write per loop iteration, deadlines, GOAWAY and the drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings

from ..app import App
from .h2_hpack import KeptDecoder, KeptEncoder
from .h2_pad import Pads
from .h2_requests import MAX_RESETS, RESET_WINDOW, H2Requests, MalformedHeaders, check_headers
from .h2_stream import H2Stream
from .registry import ConnectionRegistry

__all__ = ["MAX_RESETS", "MAX_STREAMS", "RESET_WINDOW", "H2Protocol", "H2Stream"]

log = logging.getLogger("ssehub.server")

MAX_STREAMS = 128
"""Concurrent streams one client may open on a connection (SETTINGS_MAX_CONCURRENT_STREAMS):
every EventSource of its tabs, and its requests in flight."""

_HIGH_WATER = 256 * 1024  # transport bytes unsent past which stream writes wait in backlogs


def _machine(max_head_size: int) -> H2Connection:
    """A server-side h2 state machine with our SETTINGS."""
    # Received headers are checked by H2Requests (check_headers), once per distinct list.
    config = H2Configuration(
        client_side=False, header_encoding=None, validate_inbound_headers=False
    )
    h2 = H2Connection(config)
    h2.local_settings = Settings(
        client=False,
        initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
            SettingCodes.MAX_HEADER_LIST_SIZE: max_head_size,
            SettingCodes.ENABLE_PUSH: 0,
        },
    )
    h2.decoder = KeptDecoder(h2.decoder)  # a client's repeated requests are decoded once
    h2.encoder = KeptEncoder(h2.encoder)  # and the same response head encoded once
    return h2


class H2Protocol(asyncio.Protocol):
    """The asyncio protocol of one HTTP/2 client connection (TLS with ALPN ``h2``, or h2c
    with prior knowledge)."""

    __slots__ = (
        "_deadline",
        "_flush_handle",
        "address",
        "app",
        "armed",
        "closed",
        "draining",
        "h2",
        "loop",
        "pads",
        "paused",
        "registry",
        "requests",
        "streams",
        "transport",
        "waiting",
    )

    def __init__(self, app: App, registry: ConnectionRegistry) -> None:
        self.app = app
        self.registry = registry
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport  # from connection_made on
        self.address: str | None = None  # counted against the per-address limit
        self.h2 = _machine(app.settings.max_head_size)
        self.streams: dict[int, H2Stream] = {}  # answers being sent and event streams
        self.requests = H2Requests(self)
        self.waiting: dict[H2Stream, None] = {}  # streams with a backlog, in order
        self._flush_handle: asyncio.Handle | None = None
        self.armed = False  # a flush is due this iteration: a stream need not ask again
        self.paused = False
        self.closed = False
        self.draining = False
        self._deadline = 0.0
        self.pads = Pads(self)

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)
        settings = self.app.settings
        # Refused over the limits: its first request is answered with the reason, then
        # GOAWAY; not registered, so not swept: its own timer ends it.
        self.requests.refusal = self.registry.admit(self)
        if self.requests.refusal is not None:
            self.loop.call_later(settings.head_timeout, self.goaway)
        self._deadline = self.loop.time() + settings.head_timeout
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.registry.release(self)
        for stream in list(self.streams.values()):
            self.forget(stream)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
            self.armed = False
        self.pads.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            log.info("closing an HTTP/2 connection: %s", exc)
            self._shut()  # h2 has queued a GOAWAY saying why
            return
        try:
            self._events(events)
        except MalformedHeaders as exc:  # what h2 raises when it checks them itself
            log.info("closing an HTTP/2 connection: %s", exc)
            self.goaway(ErrorCodes.PROTOCOL_ERROR)
            return
        self.flush()

    def _events(self, events: list[Event]) -> None:
        for event in events:
            if self.closed:
                return  # a refusal or the peer's GOAWAY ended it: h2 sends nothing more
            if isinstance(event, RequestReceived):
                self._deadline = 0.0
                if self.draining:
                    check_headers(event.headers or [])
                    self.h2.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
                else:
                    self.requests.received(event)
            elif isinstance(event, TrailersReceived):
                check_headers(event.headers or [], trailers=True)
            elif isinstance(event, DataReceived):
                self.requests.body(event)
            elif isinstance(event, StreamEnded):
                self.requests.complete(event.stream_id)
            elif isinstance(event, WindowUpdated):
                self._window(event.stream_id)
            elif isinstance(event, StreamReset):
                self.requests.reset_by_peer(event.stream_id)
            elif isinstance(event, RemoteSettingsChanged):
                self._window(0)  # a larger initial window opens every stream
            elif isinstance(event, ConnectionTerminated):
                self._shut()
                return

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
            stream.pump()

    # -- streams -------------------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self.registry.spawn(work)

    def _window(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.pump()
            return
        for stream in list(self.waiting):
            stream.pump()

    def forget(self, stream: H2Stream) -> None:
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
        self.waiting.pop(stream, None)
        if stream.expiry is not None:
            stream.expiry.cancel()
            stream.expiry = None
        if stream.starting is not None and not stream.starting.done():
            stream.starting.cancel()
        stream.wake()
        self.settled()

    def _idle(self) -> bool:
        return not self.streams and not self.requests.incoming and not self.requests.pending

    def settled(self) -> None:
        """A stream is done: when draining, maybe close; when nothing is left, idle from now."""
        if self.draining:
            self._close_if_done()
        elif self._idle() and not self.closed:
            self._deadline = self.loop.time() + self.app.settings.keep_alive_timeout

    # -- the wire ------------------------------------------------------------------------------

    def arm(self) -> None:
        if self._flush_handle is None and not self.closed:
            self._flush_handle = self.loop.call_soon(self.flush)
            self.armed = True

    def flush(self) -> None:
        """One transport write with every frame h2 has queued since the last one."""
        self._flush_handle = None
        self.armed = False
        data = self.h2.data_to_send()
        if data and not self.closed and not self.transport.is_closing():
            self.transport.write(data)
            self.pads.flushed()

    # -- deadlines and shutdown ----------------------------------------------------------------

    def check(self, now: float) -> None:
        """Called by the app's sweep each second: enforce every time limit of this connection."""
        if self.closed:
            return
        if self._deadline and now >= self._deadline and self._idle():
            self.goaway()
            return
        dispatch_timeout = self.app.settings.dispatch_timeout
        for stream in list(self.streams.values()):
            stream.check(now, dispatch_timeout)
        self.flush()

    def drain_close(self) -> None:
        """Shutdown: end every event stream cleanly, answer what is in flight (new requests
        are refused), then GOAWAY and close."""
        if self.closed:
            return
        self.draining = True
        for stream in list(self.streams.values()):
            if stream.sub is not None:
                stream.end_stream()
        self.flush()
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self.streams or self.requests.pending or self.closed:
            return
        if self.requests.waiting():
            return  # a request still coming
        self.goaway()

    def goaway(self, code: ErrorCodes = ErrorCodes.NO_ERROR) -> None:
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
        self.flush()
        self.closed = True
        for stream in list(self.streams.values()):
            self.forget(stream)
        self.transport.close()

    @property
    def streaming(self) -> bool:
        return True  # its streams may be event streams: ended after the events are written

    def abort(self) -> None:
        self.transport.abort()
