"""HTTP/1.1 framing of the app's answers: response heads and bodies as bytes."""

from __future__ import annotations

from functools import lru_cache
from http import HTTPStatus

from ..app.answers import Response
from ..errors import field_value

_SERVER = b"Server: ssehub\r\n"
NO_CONTENT = frozenset((204, 304))  # RFC 9110 8.6: no Content-Length on these (nor on 1xx)


def text(raw: bytes) -> str:
    """Header values and URLs as text: UTF-8 (what browsers send, e.g. a Last-Event-ID),
    else byte for byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _first_line(status: int) -> bytes:
    """The status line and the Server header."""
    return f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode("latin-1") + _SERVER


def _header(name: str, value: str) -> bytes:
    # The one place a header reaches the wire: nothing a request carried may split it.
    return f"{name}: {field_value(value)}\r\n".encode()  # UTF-8 ids survive


_FIRST_LINES = {int(status): _first_line(status) for status in HTTPStatus}
# The same few headers start most answers (content type, Link, CORS): each line made once.
_line = lru_cache(maxsize=256)(_header)
_CACHED_VALUE = 256  # characters; a longer value (a reason, a long id) is made every time


def head(
    status: int,
    headers: list[tuple[str, str]],
    content_length: int | None,
    keep_alive: bool,
) -> bytes:
    """A response head; without a content length the body runs until the connection closes."""
    first = _FIRST_LINES.get(status)
    if first is None:
        first = _first_line(status)
    lines = [first]
    for name, value in headers:
        lines.append(_line(name, value) if len(value) <= _CACHED_VALUE else _header(name, value))
    if content_length is not None and status not in NO_CONTENT:
        lines.append(b"Content-Length: %d\r\n" % content_length)
    lines.append(b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    return b"".join(lines)


LAST_CHUNK = b"0\r\n\r\n"
"""Ends a chunked body: what tells a client or proxy that a stream ended and was not cut."""


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk (never empty: an empty chunk would end the body)."""
    if not data:
        return data
    return b"%x\r\n%b\r\n" % (len(data), data)


def encode(answer: Response, keep_alive: bool) -> bytes:
    """A complete response as bytes (without its body when it answers a HEAD)."""
    return head(answer.status, answer.headers, len(answer.body), keep_alive) + answer.content
