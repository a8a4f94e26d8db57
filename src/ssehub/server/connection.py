"""What the request pipeline, the stream and the registry may use of one connection.

``HttpProtocol`` implements it; the parts depend on this seam rather than on the protocol
class, so no module of the server imports its caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

from ..app import App, OpenedStream
from .flow import FlowControl
from .states import State


class Registered(Protocol):
    """What the registry needs of any connection, HTTP/1.1 (``Connection``) or HTTP/2."""

    address: str | None  # counted against the per-address limit

    @property
    def transport(self) -> asyncio.Transport: ...

    @property
    def streaming(self) -> bool:
        """Whether it carries event streams (ended last at shutdown, after the events)."""
        ...

    def check(self, now: float) -> None: ...

    def drain_close(self) -> None: ...

    def abort(self) -> None: ...


class Connection(Protocol):
    app: App
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    flow: FlowControl
    state: State
    address: str | None  # counted against the per-address limit

    def move(self, to: State) -> None: ...

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as a task the server owns (cancelled when it drains)."""
        ...

    def start_stream(self, opened: OpenedStream, chunked: bool) -> None: ...

    def close(self) -> None: ...

    def linger(self) -> None: ...

    def check(self, now: float) -> None: ...

    def drain_close(self) -> None: ...

    def abort(self) -> None: ...
