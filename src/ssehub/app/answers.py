"""What the app is asked and what it answers, with no transport: both faces speak these.

An answer is a ``Response`` (ready now), a ``DeferredPublish`` (a response once the backend has
stored the event) or an ``OpenedStream`` (a subscribe the face turns into a stream).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from ..contract import OutcomeUnknown
from ..errors import HubError
from ..events import StoredEvent
from ..mercure import LINK

Headers = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Request:
    """One parsed request; header names are lower-cased, repeated headers joined."""

    method: str
    path: str
    query: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    keep_alive: bool = True
    http_version: str = "1.1"  # "1.0", "1.1" or "2": how a face frames a stream's body
    client: str | None = None  # the client's address, where the face knows it


@dataclass(slots=True)
class Response:
    """A complete answer; the standalone server frames it, the ASGI face sends its parts."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]
    bodiless: bool = False  # the answer to a HEAD: the body's length, never the body

    @property
    def content(self) -> bytes:
        """The bytes that follow the head on the wire."""
        return b"" if self.bodiless else self.body


def response(
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    headers: Headers = (),
) -> Response:
    """A complete response with a body."""
    return Response(status, body, [("Content-Type", content_type), *headers])


def error_response(error: HubError, extra: Headers = ()) -> Response:
    """The one place a refused request becomes a response: status, one-line reason, headers."""
    return response(
        error.status,
        error.reason.encode("utf-8") + b"\n",
        headers=(("Link", LINK), *error.headers, *extra),
    )


class DeferredPublish:
    """A publish waiting for its backend: its response exists once ``done()``."""

    __slots__ = ("_cors", "_stored")

    def __init__(self, stored: asyncio.Future[StoredEvent], cors: Headers) -> None:
        self._stored = stored
        self._cors = cors

    def done(self) -> bool:
        return self._stored.done()

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when the response is ready."""
        self._stored.add_done_callback(lambda _: callback())

    def response(self) -> Response:
        """The answer to the publisher: the event's id, or 503 with the backend's reason."""
        stored = self._stored
        exc = None if stored.cancelled() else stored.exception()
        if isinstance(exc, OutcomeUnknown):
            error = HubError(
                504,
                f"the store did not confirm the event, which may have been stored and delivered: "
                f"{exc}; publishing it again with the same id is safe (without an id it may "
                "appear twice)",
                (("Retry-After", "1"),),
            )
            return error_response(error, self._cors)
        if stored.cancelled() or exc is not None:
            error = HubError(503, f"the event was not stored: {exc}", (("Retry-After", "1"),))
            return error_response(error, self._cors)
        event_id = stored.result().id.encode("utf-8")
        return response(200, event_id, headers=(("Link", LINK), *self._cors))

    async def wait(self) -> Response:
        """The response, once the backend has answered."""
        await asyncio.wait((self._stored,))
        return self.response()
