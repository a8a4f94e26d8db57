"""httptools parsing within the limits: a connection's bytes become complete requests, or
the refusal (414, 431, 413, 400) that stops them; the head and body byte accounting that
keeps one endless header or body from growing without bound."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import httptools

from ..app import Request
from ..errors import HubError
from .connection import Connection
from .flow import PIPELINE_FULL
from .http import text


def _parse_target(url: bytes) -> tuple[str, str]:
    """A request target's path and query, as text."""
    parsed = httptools.parse_url(url)
    return text(parsed.path or b"/"), text(parsed.query or b"")


# Publishers send every request to the same URL: parsed once (up to 256 URLs of 256 bytes).
_CACHED_URL = 256
_target = lru_cache(maxsize=256)(_parse_target)


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the HubError is kept on the parser."""


class RequestParser:
    """Parses one connection's requests into ``queue``; ``refusal`` says why it stopped."""

    __slots__ = (
        "_body",
        "_body_fed",
        "_body_size",
        "_conn",
        "_head_bytes",
        "_head_size",
        "_headers",
        "_in_head",
        "_last",
        "_messages",
        "_owed",
        "_parser",
        "_url",
        "continue_owed",
        "deadline",
        "mid_request",
        "queue",
        "refusal",
        "refused_head",
    )

    def __init__(self, conn: Connection, owed: Callable[[], bool]) -> None:
        self._conn = conn
        self._owed = owed  # whether answers to earlier requests are still to be written
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
        self.refusal: HubError | None = None
        self.refused_head = False  # the refused request is a HEAD: its answer has no body
        self.continue_owed = False  # a 100 Continue owed once the earlier answers are out
        # A list, not a deque: it stays a few items long, and an empty deque costs ~600 bytes
        # on each of thousands of idle connections.
        self.queue: list[Request] = []
        # Checked by the registry's sweep once a second: one float, no timer objects.
        self.deadline = conn.loop.time() + conn.app.settings.head_timeout
        self.mid_request = False

    @property
    def open(self) -> bool:
        """Whether bytes are still parsed (not after a refusal, a stream or the drain)."""
        return self._parser is not None

    def is_head(self) -> bool:
        """Whether the request being parsed is a HEAD, so that its refusal has no body: a body
        after the head is what a client reads as the next response. llhttp knows the method
        once the request line's first space is parsed."""
        return self._parser is not None and self._parser.get_method() == b"HEAD"

    def close(self) -> None:
        """Parse nothing more."""
        self._parser = None

    def feed(self, data: bytes) -> None:
        """Parse ``data`` into ``queue``; on what cannot be parsed, set ``refusal``."""
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
            self.refusal = HubError(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if self.refusal is None:
                self.refusal = HubError(400, f"malformed HTTP request: {exc}")
        if self._in_head and self.mid_request and self.refusal is None:  # head unfinished
            if in_head and messages == self._messages:  # the same head as before this feed
                self._head_bytes += len(data)
            else:  # it began here: after the last blank line and the body that ended there
                self._head_bytes = max(0, len(data) - start - (self._body_fed - body_before))
            if self._head_bytes > self._conn.app.settings.max_head_size:
                self.refusal = HubError(431, "request head too large")
        if self.refusal is not None:
            self.refused_head = self.is_head()

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
            if self._owed() or self.queue:
                self.continue_owed = True
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
        url = self._url or b"/"
        path, query = _target(url) if len(url) <= _CACHED_URL else _parse_target(url)
        request = Request(
            parser.get_method().decode("ascii", "replace"),
            path,
            query,
            self._headers,
            b"".join(self._body),
            parser.should_keep_alive(),
            parser.get_http_version(),
            self._conn.address,
        )
        self.queue.append(request)
        self.continue_owed = False  # the body is here: no 100 Continue is needed any more
        self._in_head = True  # until the next message begins, bytes belong to a new head
        self.mid_request = False
        self.deadline = 0.0
        if len(self.queue) >= self._conn.app.settings.max_pipelined:
            self._conn.flow.pause_reading(PIPELINE_FULL)

    def _stop(self, error: HubError) -> None:
        self.refusal = error
        raise _Refused
