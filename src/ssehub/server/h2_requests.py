"""The request side of an HTTP/2 connection: a stream's header block becomes a ``Request``,
the head, URL and body limits refuse what is too large, and a complete request goes to the
app, whose answer (a response, a deferred publish, an event stream) goes back on its stream."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.utilities import HeaderValidationFlags, validate_headers

from ..app import DeferredPublish, OpenedStream, Request, Response, error_response
from ..errors import HubError
from .h2_stream import H2Link, answer, open_stream
from .http import text

if TYPE_CHECKING:
    from h2.events import DataReceived, RequestReceived

log = logging.getLogger("ssehub.server")

MAX_RESETS = 100
"""Streams a client may cancel in ``RESET_WINDOW`` seconds before its connection is told to go
away (ENHANCE_YOUR_CALM): opening and resetting streams at once is free for the client and
costs the hub a subscribe each (the "rapid reset" attack). A tab closing its EventSource
resets one."""
RESET_WINDOW = 10.0


_REQUEST = HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
)
_TRAILERS = _REQUEST._replace(is_trailer=True)
_KEEP = 256  # header lists known valid, kept at most
_SMALL = 2048  # bytes of names and values: a longer list is not kept
_valid: set[tuple[object, ...]] = set()


class MalformedHeaders(ProtocolError):
    """A received header list h2's checks refuse: the connection ends with PROTOCOL_ERROR, as
    when h2 runs them itself."""


def check_headers(headers: list[tuple[bytes, bytes]], trailers: bool = False) -> None:
    """h2's checks of a received header list (RFC 9113 8.2 and 8.3: pseudo-headers, case,
    connection-specific fields, characters), which h2 is configured not to run itself: run
    once per distinct list and kept, since a client's requests repeat. Raises
    ``MalformedHeaders`` for a malformed one."""
    key = (*headers, trailers)
    if key in _valid:
        return
    try:
        for _ in validate_headers(headers, _TRAILERS if trailers else _REQUEST):
            pass
    except ProtocolError as exc:
        raise MalformedHeaders(str(exc)) from exc
    if sum(len(name) + len(value) for name, value in headers) > _SMALL:
        return  # checked every time: the set stays small
    if len(_valid) >= _KEEP:
        _valid.clear()
    _valid.add(key)


class _Incoming:
    """A request whose head has arrived and whose body is still coming."""

    __slots__ = ("body", "refused", "request", "size")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.body: list[bytes] = []
        self.size = 0
        self.refused = False  # answered already (a limit): what it still sends is dropped


def _request(event: RequestReceived, address: str | None) -> tuple[Request, int, int]:
    """The request of a header block, with the block's size and the target's length."""
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
        address,
    )
    return request, size, len(target)


class H2Requests:
    """The requests of one HTTP/2 connection, from their HEADERS to their answer."""

    __slots__ = ("_conn", "_resets", "_resets_since", "incoming", "pending", "refusal")

    def __init__(self, conn: H2Link) -> None:
        self._conn = conn
        self.incoming: dict[int, _Incoming] = {}
        self.pending = 0  # publishes waiting for their backend
        # The connection is over the admission limits: its first request is answered with
        # this, then GOAWAY.
        self.refusal: HubError | None = None
        self._resets = 0  # streams the client cancelled since _resets_since
        self._resets_since = 0.0

    def received(self, event: RequestReceived) -> None:
        check_headers(event.headers or [])
        conn = self._conn
        stream_id = event.stream_id
        settings = conn.app.settings
        request, size, target = _request(event, conn.address)
        incoming = _Incoming(request)
        self.incoming[stream_id] = incoming
        refusal = self.refusal
        if refusal is None and target > settings.max_url_length:
            refusal = HubError(414, f"URL longer than {settings.max_url_length} bytes")
        if refusal is None and size > settings.max_head_size:
            refusal = HubError(431, "request head too large")
        length = request.headers.get("content-length", "")
        if refusal is None and length.isdigit() and int(length) > settings.max_body_size:
            refusal = HubError(413, f"body larger than {settings.max_body_size} bytes")
        if refusal is not None:
            self._refuse(stream_id, incoming, refusal)

    def body(self, event: DataReceived) -> None:
        # Every byte read is acknowledged, so the peer's windows never close on us; what the
        # body limit refuses is dropped, not kept.
        conn = self._conn
        conn.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        incoming = self.incoming.get(event.stream_id)
        if incoming is None or incoming.refused or event.data is None:
            return
        incoming.size += len(event.data)
        limit = conn.app.settings.max_body_size
        if incoming.size > limit:
            error = HubError(413, f"body larger than {limit} bytes")
            self._refuse(event.stream_id, incoming, error)
            return
        incoming.body.append(bytes(event.data))

    def _refuse(self, stream_id: int, incoming: _Incoming, error: HubError) -> None:
        conn = self._conn
        incoming.refused = True
        incoming.body = []
        conn.app.count(error)
        refusal = error_response(error)
        refusal.bodiless = incoming.request.method == "HEAD"  # no DATA after a HEAD's HEADERS
        answer(conn, stream_id, refusal)
        if error is self.refusal:  # a connection over the limits: one answer, then away
            conn.goaway()
        # Not RST_STREAM(NO_ERROR) to stop the rest of the body (RFC 9113 8.1): httpx fails
        # the whole request on it, losing this answer. The rest is read and dropped; the
        # stream stays counted against MAX_STREAMS until the client ends it.

    def complete(self, stream_id: int) -> None:
        """The request on ``stream_id`` has all its body: the app answers it."""
        incoming = self.incoming.pop(stream_id, None)
        if incoming is None or incoming.refused:
            return
        conn = self._conn
        request = incoming.request
        request.body = b"".join(incoming.body)
        result = conn.app.handle(request)
        if isinstance(result, OpenedStream):
            open_stream(conn, stream_id, result)
        elif isinstance(result, Response):
            answer(conn, stream_id, result)
        elif result.done():
            answer(conn, stream_id, result.response())
        else:
            self.pending += 1
            publish: DeferredPublish = result

            def answered() -> None:
                self.pending -= 1
                answer(conn, stream_id, publish.response())
                conn.flush()
                conn.settled()

            result.when_done(answered)

    def waiting(self) -> bool:
        """Whether a request is still coming (one refused is only being read and dropped)."""
        return any(not i.refused for i in self.incoming.values())

    def reset_by_peer(self, stream_id: int) -> None:
        """The client reset ``stream_id``: forget it, unless it resets too many too fast."""
        conn = self._conn
        now = conn.loop.time()
        if now - self._resets_since > RESET_WINDOW:
            self._resets, self._resets_since = 0, now
        self._resets += 1
        if self._resets > MAX_RESETS:
            log.info("closing an HTTP/2 connection that reset %d streams at once", self._resets)
            conn.goaway(ErrorCodes.ENHANCE_YOUR_CALM)
            return
        self.incoming.pop(stream_id, None)
        stream = conn.streams.get(stream_id)
        if stream is not None:
            conn.forget(stream)
