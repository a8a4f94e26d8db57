"""One connection: httptools parsing, pipelined publishes answered in order, or one stream.

A connection is either a request/response connection (keep-alive, pipelining) or, after a
subscribe, an event stream. For a stream the transport's own ``write`` is what the hub's
fan-out calls, and the transport's high-water mark is the slow-consumer bound: crossing it
calls ``pause_writing``, which drops the connection (the client resumes with Last-Event-ID).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

import httptools

from ..errors import HubError
from .http import LAST_CHUNK, Request, Response, chunk, error_response, head
from .tcpinfo import progress

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..backends import Replay
    from ..subscriber import Subscriber
    from .app import App

log = logging.getLogger("ssehub.server")

if TYPE_CHECKING:
    # An answer: ready bytes, or a publish waiting for its backend.
    Pending = asyncio.Future[Response] | Response

_REPLAY_HIGH_WATER = 256 * 1024


def _text(raw: bytes) -> str:
    """Header values and URLs as text: UTF-8 (what browsers send, e.g. a Last-Event-ID),
    else byte for byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the HubError is kept on the protocol."""


class HttpProtocol(asyncio.Protocol):
    """The asyncio protocol of one client connection."""

    __slots__ = (
        "_acked",
        "_address",
        "_body",
        "_body_size",
        "_chunked",
        "_closed",
        "_continue",
        "_deadline",
        "_drain",
        "_draining",
        "_eof",
        "_expiry",
        "_head_bytes",
        "_head_size",
        "_headers",
        "_in_head",
        "_inflight",
        "_messages",
        "_mid_request",
        "_parser",
        "_paused_reading",
        "_queue",
        "_refusal",
        "_starting",
        "_stream_end",
        "_stuck_since",
        "_url",
        "app",
        "loop",
        "subscriber",
        "transport",
    )

    def __init__(self, app: App) -> None:
        self.app = app
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._parser: httptools.HttpRequestParser | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_size = 0
        self._in_head = True
        self._body: list[bytes] = []
        self._body_size = 0
        self._refusal: HubError | None = None
        # Lists, not deques: both stay a few items long, and an empty deque costs ~600 bytes
        # on each of thousands of idle connections.
        self._queue: list[Request] = []
        self._inflight: list[tuple[Pending, bool]] = []  # answer, keep-alive
        self._paused_reading = False
        self._closed = False
        self.subscriber: Subscriber | None = None
        self._starting: asyncio.Task[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._address: str | None = None
        self._head_bytes = 0
        self._messages = 0
        # Checked by App.sweep() once a second: one float per connection, no timer objects.
        self._deadline = 0.0
        self._stuck_since = 0.0
        self._acked = 0
        self._stream_end = 0.0
        self._draining = False
        self._mid_request = False
        self._eof = False  # the client half-closed: answer what it asked, then close
        self._continue = False  # a 100 Continue owed once the earlier answers are out
        self._chunked = False  # an HTTP/1.1 stream: its body is chunked, and ends with a 0 chunk

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        app, settings = self.app, self.app.settings
        refusal = None
        if len(app.connections) >= settings.max_connections:
            refusal = HubError(
                503, "too many connections to this hub; try again soon", (("Retry-After", "1"),)
            )
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and refusal is None:
            address = str(peer[0])
            count = app.per_address.get(address, 0) + 1
            limit = settings.max_connections_per_ip
            if limit and count > limit:
                refusal = HubError(
                    429,
                    f"too many connections from {address} (at most {limit})",
                    (("Retry-After", "1"),),
                )
            else:
                app.per_address[address] = count
                self._address = address
        if refusal is not None:
            self.transport.write(error_response(refusal, keep_alive=False).encode())
            self._linger()
            return
        self._parser = httptools.HttpRequestParser(self)
        app.connections.add(self)
        self._deadline = self.loop.time() + settings.head_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.app.connections.discard(self)
        if self.app.all_closed is not None and not self.app.connections:
            self.app.all_closed.set()
        if self._address is not None:
            left = self.app.per_address.pop(self._address, 1) - 1
            if left > 0:
                self.app.per_address[self._address] = left
            self._address = None
        if self.subscriber is not None:
            self.app.hub.detach(self.subscriber)
            self.app.stream_closed(self.subscriber)
        if self._expiry is not None:
            self._expiry.cancel()
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("subscriber went away"))
        self._parser = None

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self.subscriber is not None:
            return  # a stream's client has nothing more to say; ignore what it sends
        in_head, messages = self._in_head, self._messages
        try:
            parser.feed_data(data)
        except _Refused:
            pass
        except httptools.HttpParserUpgrade:
            # The request that asked to upgrade is complete and queued: it gets the refusal
            # as its one answer, rather than an answer and then a refusal.
            if self._queue:
                self._queue.pop()
            self._refusal = HubError(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if self._refusal is None:
                self._refusal = HubError(400, f"malformed HTTP request: {exc}")
        if in_head and self._in_head and messages == self._messages:
            # Still the same unfinished head: httptools buffers a partial header line, so
            # count the raw bytes too, or one endless header would grow without bound.
            self._head_bytes += len(data)
            if self._refusal is None and self._head_bytes > self.app.settings.max_head_size:
                self._refusal = HubError(431, "request head too large")
        if self._refusal is not None:
            self._refuse()
            return
        self._process()

    def eof_received(self) -> bool | None:
        if self.subscriber is not None or not (self._inflight or self._queue):
            return None  # nothing left to answer: close our side too
        # A half-close (SHUT_WR) ends the requests, not the answers: keep writing them.
        self._eof = True
        return True

    def pause_writing(self) -> None:
        sub = self.subscriber
        if sub is not None and sub.held is None:
            # Live and past the bound: a slow consumer. Drop it rather than slow anyone.
            log.info("closing a slow subscriber (over %d unsent bytes)", self.app.hub.max_buffer)
            self.app.hub.drop_slow(sub)
        else:
            if self._drain is None or self._drain.done():
                self._drain = self.loop.create_future()
            if sub is None and self.transport is not None:
                # A publisher not reading its answers: stop reading its requests too.
                self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self.subscriber is None and self.transport is not None and not self._paused_reading:
            self.transport.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._messages += 1
        self._mid_request = True
        self._head_bytes = 0
        self._deadline = self.loop.time() + self.app.settings.head_timeout
        self._url = b""
        self._headers = {}
        self._head_size = 0
        self._in_head = True
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.app.settings.max_url_length:
            self._stop(HubError(414, f"URL longer than {self.app.settings.max_url_length} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size + len(self._url) > self.app.settings.max_head_size:
            self._stop(HubError(431, "request head too large"))
        key = name.decode("latin-1").lower()
        text = _text(value)
        old = self._headers.get(key)
        if old is None:
            self._headers[key] = text
        else:
            self._headers[key] = old + ("; " if key == "cookie" else ", ") + text

    def on_headers_complete(self) -> None:
        self._in_head = False
        limit = self.app.settings.max_body_size
        length = self._headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            self._stop(HubError(413, f"body larger than {limit} bytes"))
        if (
            self._headers.get("expect", "").lower() == "100-continue"
            and self.transport
            and self._parser is not None
            and self._parser.get_http_version() != "1.0"  # RFC 9110 10.1.1: never to 1.0
        ):
            # curl and others wait for this before sending a body over 1 KiB. It belongs to
            # this request, so it must not overtake the answers to earlier ones.
            if self._inflight or self._queue:
                self._continue = True
            else:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.app.settings.max_body_size:
            self._stop(HubError(413, f"body larger than {self.app.settings.max_body_size} bytes"))
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        parsed = httptools.parse_url(self._url or b"/")
        request = Request(
            parser.get_method().decode("ascii", "replace"),
            _text(parsed.path or b"/"),
            _text(parsed.query or b""),
            self._headers,
            b"".join(self._body),
            parser.should_keep_alive(),
            parser.get_http_version(),
        )
        self._queue.append(request)
        self._continue = False  # the body is here: no 100 Continue is needed any more
        self._in_head = True  # until the next message begins, bytes belong to a new head
        self._mid_request = False
        self._deadline = 0.0
        if len(self._queue) >= self.app.settings.max_pipelined and not self._paused_reading:
            assert self.transport is not None
            self.transport.pause_reading()
            self._paused_reading = True

    def _stop(self, error: HubError) -> None:
        self._refusal = error
        raise _Refused

    # -- requests ------------------------------------------------------------------------------

    def _process(self) -> None:
        """Start every queued request that can start; answers leave in request order."""
        queue = self._queue
        while queue and self.subscriber is None and not self._closed:
            request = queue[0]
            if self.app.is_stream(request):
                if self._inflight:
                    return  # answer earlier pipelined requests first
                queue.pop(0)
                self._start_stream(request)
                return
            queue.pop(0)
            pending = self.app.handle(request)
            if not request.keep_alive:
                queue.clear()
                self._refusal = None
            self._inflight.append((pending, request.keep_alive))
            if isinstance(pending, asyncio.Future) and not pending.done():
                pending.add_done_callback(self._answered)
        if self._refusal is not None and not queue and self.subscriber is None:
            # What the parser refused came after every queued request: its answer comes last.
            self._inflight.append((error_response(self._refusal, keep_alive=False), False))
            self._refusal = None
        self._flush_answers()
        if self._paused_reading and len(queue) < self.app.settings.max_pipelined // 2:
            assert self.transport is not None
            self._paused_reading = False
            self.transport.resume_reading()

    def _answered(self, _: asyncio.Future[Response]) -> None:
        self._flush_answers()
        if self._queue or self._refusal is not None:
            self._process()

    def _flush_answers(self) -> None:
        inflight = self._inflight
        out: list[bytes] = []
        keep_alive = True
        while inflight and keep_alive:
            front, front_keep_alive = inflight[0]
            if isinstance(front, Response):
                out.append(front.encode())
            elif front.done():
                out.append(front.result().encode())
            else:
                break
            inflight.pop(0)
            keep_alive = front_keep_alive
        if out and not self._closed:
            transport = self.transport
            assert transport is not None
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            if not keep_alive:
                inflight.clear()
                self._queue.clear()
                self._linger()
                return
        if not inflight and not self._queue and self.subscriber is None:
            if (self._draining or self._eof) and self.transport is not None:
                self.transport.close()
            elif self._continue and self._mid_request and self.transport is not None:
                self._continue = False
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            elif self._deadline == 0.0:
                self._deadline = self.loop.time() + self.app.settings.keep_alive_timeout

    def _refuse(self) -> None:
        """Answer a request the parser could not accept, then close: framing is lost. The
        complete requests before it still run and are answered first (see _process)."""
        self._parser = None
        self._continue = False
        self._process()

    def _linger(self) -> None:
        """Close after a refusal without losing the answer: closing with unread request bytes
        makes the kernel send a reset that can overtake it, so send EOF, drop what the client
        still sends, and close when it does (or after a second)."""
        transport = self.transport
        assert transport is not None
        self._parser = None
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(1.0, transport.close)
        else:
            transport.close()

    # -- streams -------------------------------------------------------------------------------

    def _start_stream(self, request: Request) -> None:
        try:
            assert self.transport is not None
            # HTTP/1.1 streams are chunked, so a cut stream never looks like a clean end;
            # HTTP/1.0 has no chunks and stays close-delimited.
            chunked = request.http_version != "1.0"
            opened = self.app.open_stream(
                request, self, self.transport.write, chunk if chunked else None
            )
        except HubError as error:
            self._inflight.append((error_response(error, request.keep_alive), request.keep_alive))
            self._process()
            return
        sub, last_event_id, preamble, expires = opened
        assert self.transport is not None
        self.subscriber = sub
        self._chunked = chunked
        self._queue.clear()
        # A stream reads nothing more: free the parser and the request's leftovers, which
        # are most of what an idle connection would otherwise keep.
        self._parser = None
        self._headers, self._url, self._body = {}, b"", []
        self.transport.set_write_buffer_limits(high=_REPLAY_HIGH_WATER)
        expires_at = None if expires is None else self.loop.time() + expires
        if self.app.settings.write_timeout:
            self._stream_end = self.loop.time() + self.app.settings.write_timeout
        self._deadline = 0.0

        def framed(replay: Replay | None) -> bytes:
            headers, first = preamble(replay)
            if not chunked:
                return head(200, headers, None, keep_alive=False) + first
            headers.append(("Transfer-Encoding", "chunked"))
            return head(200, headers, None, keep_alive=False) + chunk(first)

        self._starting = self.loop.create_task(
            self._run_stream(sub, last_event_id, framed, expires_at)
        )

    async def _run_stream(
        self,
        sub: Subscriber,
        last_event_id: str | None,
        preamble: Callable[[Replay | None], bytes],
        expires_at: float | None,
    ) -> None:
        try:
            await self.app.hub.subscribe(sub, last_event_id, preamble)
        except (ConnectionResetError, asyncio.CancelledError):
            return
        except HubError as error:  # raised before the stream's head was written
            log.warning("refusing a subscriber: %s", error.reason)
            if self.transport is not None and not self._closed:
                self.transport.write(error_response(error, keep_alive=False).encode())
                self.transport.close()
            return
        if not self._closed and self.transport is not None:
            # Live from here: past this many unsent bytes the subscriber is dropped.
            self.transport.set_write_buffer_limits(high=self.app.hub.max_buffer)
            if expires_at is not None:
                # Armed once the head and replay are written, so even a token about to
                # expire gets its answer rather than a connection closed with zero bytes.
                self._expiry = self.loop.call_at(expires_at, self._expired)
        self._starting = None

    # -- deadlines and shutdown ----------------------------------------------------------------

    def check(self, now: float) -> None:
        """Called by the app's sweep each second: enforce every time limit of this connection."""
        transport = self.transport
        if transport is None or self._closed:
            return
        settings = self.app.settings
        if self.subscriber is not None:
            if self._stream_end and now >= self._stream_end:
                self._end_stream("reached --write-timeout; it resumes with Last-Event-ID")
                return
            if not settings.dispatch_timeout:
                return
            unsent, acked = progress(transport)
            if unsent and acked == self._acked:  # bytes waiting, none taken since last look
                if not self._stuck_since:
                    self._stuck_since = now
                elif now - self._stuck_since >= settings.dispatch_timeout:
                    log.info(
                        "closing a subscriber that read nothing for %gs", settings.dispatch_timeout
                    )
                    self.app.hub.drop_slow(self.subscriber)
            else:
                self._stuck_since = 0.0
            self._acked = acked
            return
        if self._deadline and now >= self._deadline and not self._inflight:
            if self._mid_request:
                error = HubError(408, f"request not received within {settings.head_timeout:g}s")
                transport.write(error_response(error, keep_alive=False).encode())
            transport.close()

    def _end_stream(self, why: str) -> None:
        log.debug("ending a stream: %s", why)
        if self.subscriber is not None:
            self.app.hub.detach(self.subscriber)
        self._close_stream()

    def _close_stream(self) -> None:
        """A clean end: the terminating chunk once the stream has begun, then close (which,
        unlike abort, sends what is buffered first)."""
        if self.transport is None or self._closed:
            return
        if self._chunked and self._starting is None:
            self.transport.write(LAST_CHUNK)
        self.transport.close()

    def drain_close(self) -> None:
        """Shutdown: end a stream cleanly, or close a request connection once answered."""
        self._draining = True
        if self.transport is None or self._closed:
            return
        if self.subscriber is not None:
            self._end_stream("the hub is shutting down")
            return
        self.transport.pause_reading()
        self._queue.clear()
        if not self._inflight:
            self.transport.close()

    def _expired(self) -> None:
        log.info("closing a subscriber whose token expired")
        if self.subscriber is not None:
            self.app.hub.detach(self.subscriber)
        self._close_stream()

    # -- Stream, for the hub -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionResetError("subscriber went away")
        if self._drain is not None and not self._drain.done():
            await self._drain
