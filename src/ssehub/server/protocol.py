"""One client connection as an asyncio Protocol: the transport's callbacks, routed by state.

The connection is a request/response connection (``RequestPipeline``) until a subscribe
makes it an event stream (``StreamConnection``); ``states.py`` names every state and move.
For a stream the transport's own ``write`` is what the hub's fan-out calls, and the
transport's high-water mark is the slow-consumer bound: crossing it calls ``pause_writing``,
which drops the connection (the client resumes with Last-Event-ID).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, cast

from ..app import App, OpenedStream, error_response
from .flow import ANSWERS_UNREAD, SHUTDOWN, FlowControl
from .http import encode
from .pipeline import RequestPipeline
from .registry import ConnectionRegistry
from .states import State, advance
from .stream import StreamConnection

log = logging.getLogger("ssehub.server")


class HttpProtocol(asyncio.Protocol):
    """The asyncio protocol of one client connection."""

    __slots__ = (
        "address",
        "app",
        "flow",
        "loop",
        "pipeline",
        "registry",
        "state",
        "stream",
        "transport",
    )

    def __init__(self, app: App, registry: ConnectionRegistry) -> None:
        self.app = app
        self.registry = registry
        self.loop = asyncio.get_running_loop()
        self.state = State.REQUESTS
        self.address: str | None = None  # counted against the per-address limit
        self.pipeline: RequestPipeline | None = None
        self.stream: StreamConnection | None = None

    def move(self, to: State) -> None:
        self.state = advance(self.state, to)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self.registry.spawn(work)

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.flow = FlowControl(self.transport)
        refusal = self.registry.admit(self)
        if refusal is not None:
            self.transport.write(encode(error_response(refusal), keep_alive=False))
            if self.registry.may_linger(self):
                self.linger()
            else:
                self.close()
            return
        self.pipeline = RequestPipeline(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.move(State.CLOSED)
        self.registry.release(self)
        if self.stream is not None:
            self.stream.lost()
        self.flow.lost()
        self.pipeline = None

    def data_received(self, data: bytes) -> None:
        # A stream's client has nothing more to say, nor one being closed: ignore it.
        if self.state is State.REQUESTS and self.pipeline is not None:
            self.pipeline.feed(data)

    def eof_received(self) -> bool | None:
        if self.state is State.REQUESTS and self.pipeline is not None:
            # A half-close (SHUT_WR) ends the requests, not the answers: keep writing them.
            return True if self.pipeline.half_closed() else None
        return None  # nothing left to answer: close our side too

    def pause_writing(self) -> None:
        if self.state is State.STREAMING and self.stream is not None:
            self.stream.slow()
            return
        self.flow.pause_writing()
        if self.state is State.REQUESTS:
            self.flow.pause_reading(ANSWERS_UNREAD)

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        self.flow.resume_reading(ANSWERS_UNREAD)

    # -- moves ---------------------------------------------------------------------------------

    def start_stream(self, opened: OpenedStream, chunked: bool) -> None:
        """The pipeline accepted a subscribe: this connection is a stream from now on."""
        self.move(State.OPENING)
        # A stream reads nothing more: free the parser and the request's leftovers, which
        # are most of what an idle connection would otherwise keep.
        self.pipeline = None
        self.stream = StreamConnection(self, opened, chunked)

    def close(self) -> None:
        """Close once what is buffered is sent (unlike abort)."""
        if self.state is not State.CLOSED:
            self.move(State.CLOSING)
        self.transport.close()

    def linger(self) -> None:
        """Close after a refusal without losing the answer: closing with unread request bytes
        makes the kernel send a reset that can overtake it, so send EOF, drop what the client
        still sends, and close when it does (or after a second)."""
        self.move(State.CLOSING)
        self.pipeline = None
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(1.0, transport.close)
        else:
            transport.close()

    # -- for the registry ----------------------------------------------------------------------

    def check(self, now: float) -> None:
        """Called by the registry's sweep each second: enforce every time limit."""
        if self.state is State.CLOSED:
            return
        if self.stream is not None:
            self.stream.check(now)
        elif self.pipeline is not None:
            self.pipeline.check(now)

    def drain_close(self) -> None:
        """Shutdown: end a stream cleanly, or close a request connection once answered."""
        if self.state is State.CLOSED:
            return
        if self.stream is not None:
            self.stream.end("the hub is shutting down")
            return
        self.flow.pause_reading(SHUTDOWN)
        if self.state is State.REQUESTS:
            self.move(State.DRAINING)
        if self.pipeline is not None:
            self.pipeline.drain()
        else:
            self.close()

    @property
    def streaming(self) -> bool:
        return self.stream is not None

    def abort(self) -> None:
        self.transport.abort()
