"""Flow control of one transport (uvicorn's ``flow_control.py``): why reading is paused, and
a waiter for writes to drain."""

from __future__ import annotations

import asyncio

PIPELINE_FULL = 1  # max_pipelined requests are queued: read no more until half are answered
ANSWERS_UNREAD = 2  # the client does not read its answers: stop reading its requests too
SHUTDOWN = 4  # draining: nothing more is read


class FlowControl:
    """Read pauses by reason (the transport resumes when none is left) and write draining."""

    __slots__ = ("_drained", "_reasons", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._reasons = 0
        self._drained: asyncio.Future[None] | None = None

    def pause_reading(self, reason: int) -> None:
        if not self._reasons:
            self._transport.pause_reading()
        self._reasons |= reason

    def resume_reading(self, reason: int) -> None:
        if self._reasons & reason:
            self._reasons &= ~reason
            if not self._reasons:
                self._transport.resume_reading()

    def paused(self, reason: int) -> bool:
        return bool(self._reasons & reason)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self) -> None:
        """Return once the transport's buffer is under its low-water mark."""
        if self._drained is not None and not self._drained.done():
            await self._drained

    def lost(self) -> None:
        """The connection is gone: a waiting writer hears it."""
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionResetError("subscriber went away"))
