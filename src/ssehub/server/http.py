"""HTTP/1.1 framing helpers: the request record and response heads, shared by the server."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus

from ..errors import HubError, field_value
from ..mercure import LINK

_SERVER = b"Server: ssehub\r\n"
_NO_CONTENT = frozenset((204, 304))  # RFC 9110 8.6: no Content-Length on these (nor on 1xx)


@dataclass(slots=True)
class Request:
    """One parsed request; header names are lower-cased, repeated headers joined."""

    method: str
    path: str
    query: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    keep_alive: bool = True
    http_version: str = "1.1"


def head(
    status: int,
    headers: list[tuple[str, str]],
    content_length: int | None,
    keep_alive: bool,
) -> bytes:
    """A response head; without a content length the body runs until the connection closes."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode("latin-1"), _SERVER]
    for name, value in headers:
        # The one place a header reaches the wire: nothing a request carried may split it.
        lines.append(f"{name}: {field_value(value)}\r\n".encode())  # UTF-8 ids survive
    if content_length is not None and status not in _NO_CONTENT:
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


@dataclass(slots=True)
class Response:
    """A complete answer; the standalone server encodes it, the ASGI face sends its parts."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]
    keep_alive: bool = True
    bodiless: bool = False  # the answer to a HEAD: the body's length, never the body

    def encode(self) -> bytes:
        framed = head(self.status, self.headers, len(self.body), self.keep_alive)
        return framed if self.bodiless else framed + self.body

    @property
    def content(self) -> bytes:
        """The bytes that follow the head on the wire."""
        return b"" if self.bodiless else self.body


def response(
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    headers: tuple[tuple[str, str], ...] = (),
    keep_alive: bool = True,
) -> Response:
    """A complete response with a body."""
    return Response(status, body, [("Content-Type", content_type), *headers], keep_alive)


def error_response(
    error: HubError, keep_alive: bool, extra: tuple[tuple[str, str], ...] = ()
) -> Response:
    """The one place a refused request becomes bytes: status, one-line reason, its headers."""
    return response(
        error.status,
        error.reason.encode("utf-8") + b"\n",
        headers=(("Link", LINK), *error.headers, *extra),
        keep_alive=keep_alive,
    )
