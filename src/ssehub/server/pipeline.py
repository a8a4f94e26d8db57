"""The request side of a connection (uvicorn's ``httptools_impl.py``): httptools parsing,
pipelined requests started in order, answers written in request order."""

from __future__ import annotations

import httptools

from ..app import DeferredPublish, OpenedStream, Request, Response, error_response
from ..errors import HubError
from .connection import Connection
from .flow import PIPELINE_FULL
from .http import encode, text
from .states import State

_SHUTTING_DOWN = HubError(503, "the hub is shutting down; try again soon", (("Retry-After", "1"),))


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the HubError is kept on the pipeline."""


class RequestPipeline:
    """Parses one connection's requests and answers them in order; freed when it streams."""

    __slots__ = (
        "_body",
        "_body_fed",
        "_body_size",
        "_conn",
        "_continue",
        "_eof",
        "_head_bytes",
        "_head_size",
        "_headers",
        "_in_head",
        "_inflight",
        "_last",
        "_messages",
        "_parser",
        "_queue",
        "_refusal",
        "_url",
        "deadline",
        "mid_request",
    )

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_size = 0
        self._head_bytes = 0
        self._in_head = True
        self._messages = 0
        self._last = b""  # the previous packet's last bytes: a blank line may straddle two
        self._body: list[bytes] = []
        self._body_size = 0
        self._body_fed = 0  # body bytes ever parsed on this connection, to tell them from heads
        self._refusal: HubError | None = None
        self._eof = False  # the client half-closed: answer what it asked, then close
        self._continue = False  # a 100 Continue owed once the earlier answers are out
        # Lists, not deques: both stay a few items long, and an empty deque costs ~600 bytes
        # on each of thousands of idle connections.
        self._queue: list[Request] = []
        self._inflight: list[tuple[Response | DeferredPublish, bool]] = []  # answer, keep-alive
        # Checked by the registry's sweep once a second: one float, no timer objects.
        self.deadline = conn.loop.time() + conn.app.settings.head_timeout
        self.mid_request = False

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not self._inflight and not self._queue

    def feed(self, data: bytes) -> None:
        """Parse ``data``; start what can start, or refuse what cannot be parsed."""
        parser = self._parser
        if parser is None:
            return
        in_head, messages = self._in_head, self._messages
        # httptools buffers a partial header line, so the raw bytes of a head still unfinished
        # after this feed count too, or one endless header would grow without bound. Such a
        # head holds no blank line (the parser wants CRLF), so it began after the last one:
        # feeding up to there apart tells its bytes here from those of earlier messages.
        start = data.rfind(b"\r\n\r\n") + 4
        if start < 4:  # none here; maybe one begun in the previous packet
            straddled = (self._last + data[:3]).rfind(b"\r\n\r\n")
            start = straddled + 4 - len(self._last) if straddled >= 0 else 0
        self._last = data[-3:] if len(data) >= 3 else (self._last + data)[-3:]
        body_before = self._body_fed
        try:
            if 0 < start < len(data):
                view = memoryview(data)
                parser.feed_data(view[:start])
                body_before = self._body_fed
                parser.feed_data(view[start:])
            else:
                parser.feed_data(data)
        except _Refused:
            pass
        except httptools.HttpParserUpgrade:
            self._refusal = HubError(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if self._refusal is None:
                self._refusal = HubError(400, f"malformed HTTP request: {exc}")
        if self._in_head and self.mid_request and self._refusal is None:  # head unfinished
            if in_head and messages == self._messages:  # the same head as before this feed
                self._head_bytes += len(data)
            else:  # it began here: after the last blank line and the body that ended there
                self._head_bytes = max(0, len(data) - start - (self._body_fed - body_before))
            if self._head_bytes > self._conn.app.settings.max_head_size:
                self._refusal = HubError(431, "request head too large")
        if self._refusal is not None:
            self._refuse()
            return
        self.process()

    def half_closed(self) -> bool:
        """The client sent EOF: whether answers are still owed (then the socket stays open
        for them and closes after the last)."""
        if self.idle:
            return False
        self._eof = True
        return True

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._messages += 1
        self.mid_request = True
        self._head_bytes = 0
        self.deadline = self._conn.loop.time() + self._conn.app.settings.head_timeout
        self._url = b""
        self._headers = {}
        self._head_size = 0
        self._in_head = True
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        limit = self._conn.app.settings.max_url_length
        if len(self._url) > limit:
            self._stop(HubError(414, f"URL longer than {limit} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size + len(self._url) > self._conn.app.settings.max_head_size:
            self._stop(HubError(431, "request head too large"))
        key = name.decode("latin-1").lower()
        value_text = text(value)
        old = self._headers.get(key)
        if old is None:
            self._headers[key] = value_text
        else:
            self._headers[key] = old + ("; " if key == "cookie" else ", ") + value_text

    def on_headers_complete(self) -> None:
        self._in_head = False
        limit = self._conn.app.settings.max_body_size
        length = self._headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            self._stop(HubError(413, f"body larger than {limit} bytes"))
        if (
            self._headers.get("expect", "").lower() == "100-continue"
            and self._parser is not None
            and self._parser.get_http_version() != "1.0"  # RFC 9110 10.1.1: never to 1.0
        ):
            # curl and others wait for this before sending a body over 1 KiB. It belongs to
            # this request, so it must not overtake the answers to earlier ones.
            if self._inflight or self._queue:
                self._continue = True
            else:
                self._conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        self._body_fed += len(body)
        limit = self._conn.app.settings.max_body_size
        if self._body_size > limit:
            self._stop(HubError(413, f"body larger than {limit} bytes"))
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        if parser.should_upgrade():  # refused itself, not answered as if it had not asked
            self._stop(HubError(400, "protocol upgrades are not supported"))
        parsed = httptools.parse_url(self._url or b"/")
        request = Request(
            parser.get_method().decode("ascii", "replace"),
            text(parsed.path or b"/"),
            text(parsed.query or b""),
            self._headers,
            b"".join(self._body),
            parser.should_keep_alive(),
            parser.get_http_version(),
            self._conn.address,
        )
        self._queue.append(request)
        self._continue = False  # the body is here: no 100 Continue is needed any more
        self._in_head = True  # until the next message begins, bytes belong to a new head
        self.mid_request = False
        self.deadline = 0.0
        if len(self._queue) >= self._conn.app.settings.max_pipelined:
            self._conn.flow.pause_reading(PIPELINE_FULL)

    def _stop(self, error: HubError) -> None:
        self._refusal = error
        raise _Refused

    # -- answering -----------------------------------------------------------------------------

    def process(self) -> None:
        """Start every queued request that can start; answers leave in request order."""
        conn, queue, app = self._conn, self._queue, self._conn.app
        while queue and conn.state is State.REQUESTS:
            request = queue[0]
            if app.is_stream(request) and self._inflight:
                return  # answer earlier pipelined requests first
            queue.pop(0)
            answer = app.handle(request)
            if isinstance(answer, OpenedStream):
                self._parser = None
                # HTTP/1.1 streams are chunked, so a cut stream never looks like a clean end;
                # HTTP/1.0 has no chunks and stays close-delimited.
                conn.start_stream(answer, chunked=request.http_version != "1.0")
                return
            if not request.keep_alive:
                queue.clear()
                self._refusal = None
            self._inflight.append((answer, request.keep_alive))
            if isinstance(answer, DeferredPublish) and not answer.done():
                answer.when_done(self._answered)
        if self._refusal is not None and not queue and conn.state is State.REQUESTS:
            # What the parser refused came after every queued request: its answer comes last.
            self._inflight.append((error_response(self._refusal), False))
            self._refusal = None
        self.flush()
        if conn.flow.paused(PIPELINE_FULL) and len(queue) < app.settings.max_pipelined // 2:
            conn.flow.resume_reading(PIPELINE_FULL)

    def _answered(self) -> None:
        self.flush()
        if self._queue or self._refusal is not None:
            self.process()

    def flush(self) -> None:
        """Write every answer that is ready, in order; close after a last one."""
        conn, inflight = self._conn, self._inflight
        out: list[bytes] = []
        keep_alive = True
        while inflight and keep_alive:
            front, front_keep_alive = inflight[0]
            if isinstance(front, DeferredPublish):
                if not front.done():
                    break
                front = front.response()
            out.append(encode(front, front_keep_alive))
            inflight.pop(0)
            keep_alive = front_keep_alive
        if conn.state is State.CLOSED:
            return
        if out:
            conn.transport.write(out[0] if len(out) == 1 else b"".join(out))
            if not keep_alive:
                inflight.clear()
                self._queue.clear()
                conn.linger()
                return
        if self.idle:
            if conn.state is State.DRAINING or self._eof:
                conn.close()
            elif self._continue and self.mid_request:
                self._continue = False
                conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            elif self.deadline == 0.0:
                self.deadline = conn.loop.time() + conn.app.settings.keep_alive_timeout

    def _refuse(self) -> None:
        """Answer a request the parser could not accept, then close: framing is lost. The
        complete requests before it still run and are answered first (see ``process``)."""
        self._parser = None
        self._continue = False
        self.process()

    def drain(self) -> None:
        """Shutdown: read nothing more; what is in flight is answered, then what waited to
        start (a stream behind a publish, the requests behind it) gets a 503, the last with
        ``Connection: close``; then the connection closes."""
        queue, self._queue = self._queue, []
        self._parser = None
        self._refusal = None
        app = self._conn.app
        for number, request in enumerate(queue, 1):
            answer = error_response(_SHUTTING_DOWN, app.cors.headers(request))
            answer.bodiless = request.method == "HEAD"
            self._inflight.append((answer, number < len(queue)))
        if self._inflight:
            self.flush()
        else:
            self._conn.close()

    def check(self, now: float) -> None:
        """Head and keep-alive deadlines: 408 for a request cut short, else a quiet close."""
        if self.deadline and now >= self.deadline and not self._inflight:
            conn = self._conn
            if self.mid_request:
                settings = conn.app.settings
                error = HubError(408, f"request not received within {settings.head_timeout:g}s")
                conn.transport.write(encode(error_response(error), keep_alive=False))
            conn.close()
