"""A connection that has become an event stream: the hub's ``Stream``, its start (replay,
then live) and its time limits (token expiry, write timeout, dispatch timeout)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..app import OpenedStream
from ..contract import HistoryUnavailable, Replay
from .connection import Connection
from .http import LAST_CHUNK, chunk, encode, head
from .states import State
from .tcpinfo import progress

if TYPE_CHECKING:
    import asyncio

    from ..hub import Preamble

log = logging.getLogger("ssehub.server")

_REPLAY_HIGH_WATER = 256 * 1024


class StreamConnection:
    """One subscriber's connection, from its accepted subscribe to its close."""

    __slots__ = (
        "_acked",
        "_chunked",
        "_conn",
        "_ends_at",
        "_expiry",
        "_looked",
        "_seen",
        "_starting",
        "_stuck_since",
        "_unsent",
        "sub",
    )

    def __init__(self, conn: Connection, opened: OpenedStream, chunked: bool) -> None:
        self._conn = conn
        loop = conn.loop
        # The fan-out calls the transport's own write: no frame of ours on the hot path. A
        # chunked stream's bytes are framed once per view by the hub (``chunk`` is in the
        # view's key), never per subscriber.
        self._chunked = chunked
        self.sub = opened.subscriber(self, conn.transport.write, chunk if chunked else None)
        self._expiry: asyncio.TimerHandle | None = None
        expires_at = None if opened.expires is None else loop.time() + opened.expires
        self._ends_at = 0.0  # the write timeout's deadline, set once live: never before the head
        self._stuck_since = 0.0
        self._acked = 0
        self._looked = 0.0  # when the kernel was last asked about progress
        self._seen = 0  # the subscriber's log offset then
        self._unsent = 0  # and the bytes not yet delivered then
        conn.transport.set_write_buffer_limits(high=_REPLAY_HIGH_WATER)
        self._starting: asyncio.Task[None] | None = None
        if opened.last_event_id is None:
            # Nothing to replay: live at once, without a task (most subscribes at a connect
            # storm are these).
            self._start_now(opened, expires_at)
        else:
            self._starting = conn.spawn(self._start(opened, expires_at))

    def _preamble(self, opened: OpenedStream, headed: list[bool]) -> Preamble:
        """What the hub calls once the replay is known: the head, then the first bytes.
        ``headed`` records that the head went out (no 500 can follow it)."""

        def preamble(replay: Replay | None) -> bytes:
            start = opened.head(replay)
            headed.append(True)
            if not self._chunked:
                return head(200, start.headers, None, keep_alive=False) + start.first
            headers = [*start.headers, ("Transfer-Encoding", "chunked")]
            return head(200, headers, None, keep_alive=False) + chunk(start.first)

        return preamble

    def _start_now(self, opened: OpenedStream, expires_at: float | None) -> None:
        conn = self._conn
        headed: list[bool] = []
        try:
            conn.app.hub.subscribe_now(self.sub, self._preamble(opened, headed))
        except ConnectionResetError:  # it left or was dropped meanwhile (SubscriberClosed)
            return
        except Exception:
            self._failed(opened, headed)
            return
        self._live(expires_at)

    async def _start(self, opened: OpenedStream, expires_at: float | None) -> None:
        conn = self._conn
        app = conn.app
        headed: list[bool] = []
        try:
            await app.hub.subscribe(self.sub, opened.last_event_id, self._preamble(opened, headed))
        except ConnectionResetError:  # it left or was dropped meanwhile (SubscriberClosed)
            return
        except HistoryUnavailable as exc:  # raised before the stream's head was written
            log.warning("refusing a subscriber: %s", exc)
            if conn.state is not State.CLOSED:
                conn.transport.write(encode(app.unavailable(exc, opened), keep_alive=False))
                conn.close()
            return
        except Exception:
            self._failed(opened, headed)
            return
        self._starting = None
        self._live(expires_at)

    def _failed(self, opened: OpenedStream, headed: list[bool]) -> None:
        """A fault of the hub's while starting: a 500 if nothing went out yet, else close."""
        log.exception("a stream failed to start")
        conn = self._conn
        if conn.state is not State.CLOSED:
            if not headed:
                conn.transport.write(encode(conn.app.failed(opened), keep_alive=False))
            conn.close()

    def _live(self, expires_at: float | None) -> None:
        conn = self._conn
        app = conn.app
        if conn.state is State.OPENING:
            conn.move(State.STREAMING)
            # Live from here: past this many unsent bytes the subscriber is dropped.
            conn.transport.set_write_buffer_limits(high=app.hub.max_buffer)
            if app.settings.write_timeout:  # counted from here: a slow history costs nothing
                self._ends_at = conn.loop.time() + app.settings.write_timeout
            if expires_at is not None:
                # Armed once the head and replay are written, so even a token about to
                # expire gets its answer rather than a connection closed with zero bytes.
                self._expiry = conn.loop.call_at(expires_at, self._expired)

    # -- Stream, for the hub -------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._conn.state is not State.CLOSED:
            self._conn.transport.write(data)

    def abort(self) -> None:
        self._conn.transport.abort()

    async def drain(self) -> None:
        if self._conn.state is State.CLOSED:
            raise ConnectionResetError("subscriber went away")
        await self._conn.flow.drain()

    # -- limits --------------------------------------------------------------------------------

    def slow(self) -> None:
        """Live and past the bound: a slow consumer. Drop it rather than slow anyone."""
        hub = self._conn.app.hub
        log.info("closing a slow subscriber (over %d unsent bytes)", hub.max_buffer)
        hub.drop_slow(self.sub)

    def check(self, now: float) -> None:
        """The sweep's look: write timeout, then dispatch timeout (nothing read for a while)."""
        conn = self._conn
        if self._ends_at and now >= self._ends_at:
            self.end("reached --write-timeout; it resumes with Last-Event-ID")
            return
        timeout = conn.app.settings.dispatch_timeout
        if not timeout or now - self._looked < timeout / 4:
            return  # a few looks per timeout: each costs system calls, for every stream
        sub = self.sub
        if sub.live and sub.sent == self._seen and not self._unsent:
            self._looked = now  # nothing written since a look found everything delivered
            return
        self._looked, self._seen = now, sub.sent
        unsent, acked = progress(conn.transport)
        self._unsent = unsent
        if unsent and acked == self._acked:  # bytes waiting, none taken since last look
            if not self._stuck_since:
                self._stuck_since = now
            elif now - self._stuck_since >= timeout:
                log.info("closing a subscriber that read nothing for %gs", timeout)
                conn.app.hub.drop_slow(self.sub)
        else:
            self._stuck_since = 0.0
        self._acked = acked

    def end(self, why: str) -> None:
        """End the stream cleanly: what is buffered is sent (a chunked one's terminating chunk
        last, once it is live), then the connection closes."""
        log.debug("ending a stream: %s", why)
        conn = self._conn
        conn.app.hub.detach(self.sub)
        if self._chunked and conn.state is State.STREAMING:
            conn.transport.write(LAST_CHUNK)
        conn.close()

    def _expired(self) -> None:
        log.info("closing a subscriber whose token expired")
        self._expiry = None
        self.end("its token expired")

    def lost(self) -> None:
        """The connection is gone: forget the subscriber, announce its end."""
        app = self._conn.app
        app.hub.detach(self.sub)
        app.stream_closed(self.sub)
        if self._expiry is not None:
            self._expiry.cancel()
        if self._starting is not None:
            self._starting.cancel()
