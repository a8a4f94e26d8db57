"""The request side of a connection (uvicorn's ``httptools_impl.py``): pipelined requests
started in order, answers written in request order, half-close, ``100 Continue``, refusals
answered after the requests before them. The parsing and its limits are ``parser.py``'s."""

from __future__ import annotations

from ..app import DeferredPublish, OpenedStream, Response, error_response
from ..errors import HubError
from .connection import Connection
from .flow import PIPELINE_FULL
from .http import encode
from .parser import RequestParser
from .states import State

_SHUTTING_DOWN = HubError(503, "the hub is shutting down; try again soon", (("Retry-After", "1"),))


class RequestPipeline:
    """Parses one connection's requests and answers them in order; freed when it streams."""

    __slots__ = ("_conn", "_eof", "_inflight", "_reader", "_waiting")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._eof = False  # the client half-closed: answer what it asked, then close
        # A list, not a deque: it stays a few items long, and an empty deque costs ~600 bytes
        # on each of thousands of idle connections.
        self._inflight: list[tuple[Response | DeferredPublish, bool]] = []  # answer, keep-alive
        self._reader = RequestParser(conn, self._owed)
        # The one answer a callback waits for: the first in line not ready yet. Answers leave
        # in order, so the others need none (a pipeline of 64 publishes woke 64 times).
        self._waiting: DeferredPublish | None = None

    def _owed(self) -> bool:
        return bool(self._inflight)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not self._inflight and not self._reader.queue

    def feed(self, data: bytes) -> None:
        """Parse ``data``; start what can start, or refuse what cannot be parsed."""
        reader = self._reader
        if not reader.open:
            return
        reader.feed(data)
        if reader.refusal is not None:
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

    # -- answering -----------------------------------------------------------------------------

    def process(self) -> None:
        """Start every queued request that can start; answers leave in request order."""
        conn, reader, app = self._conn, self._reader, self._conn.app
        queue = reader.queue
        while queue and conn.state is State.REQUESTS:
            request = queue[0]
            if app.is_stream(request) and self._inflight:
                # Answer earlier pipelined requests first: what is ready goes now (no callback
                # would ever send an answer that was ready), the rest calls back when it is.
                self.flush()
                if self._inflight or conn.state is not State.REQUESTS:
                    return
            queue.pop(0)
            answer = app.handle(request)
            if isinstance(answer, OpenedStream):
                reader.close()
                # HTTP/1.1 streams are chunked, so a cut stream never looks like a clean end;
                # HTTP/1.0 has no chunks and stays close-delimited.
                conn.start_stream(answer, chunked=request.http_version != "1.0")
                return
            if not request.keep_alive:
                queue.clear()
                reader.refusal = None
            self._inflight.append((answer, request.keep_alive))
        if reader.refusal is not None and not queue and conn.state is State.REQUESTS:
            # What the parser refused came after every queued request: its answer comes last.
            refusal = error_response(reader.refusal)
            refusal.bodiless = reader.refused_head
            self._inflight.append((refusal, False))
            reader.refusal = None
        self.flush()
        if conn.flow.paused(PIPELINE_FULL) and len(queue) < app.settings.max_pipelined // 2:
            conn.flow.resume_reading(PIPELINE_FULL)

    def _answered(self) -> None:
        self.flush()
        if self._reader.queue or self._reader.refusal is not None:
            self.process()

    def flush(self) -> None:
        """Write every answer that is ready, in order; close after a last one."""
        conn, inflight, reader = self._conn, self._inflight, self._reader
        out: list[bytes] = []
        keep_alive = True
        while inflight and keep_alive:
            front, front_keep_alive = inflight[0]
            if isinstance(front, DeferredPublish):
                if not front.done():
                    if self._waiting is not front:
                        self._waiting = front
                        front.when_done(self._answered)
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
                reader.queue.clear()
                conn.linger()
                return
        if self.idle:
            if conn.state is State.DRAINING or self._eof:
                conn.close()
            elif reader.continue_owed and reader.mid_request:
                reader.continue_owed = False
                conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            elif reader.deadline == 0.0:
                reader.deadline = conn.loop.time() + conn.app.settings.keep_alive_timeout

    def _refuse(self) -> None:
        """Answer a request the parser could not accept, then close: framing is lost. The
        complete requests before it still run and are answered first (see ``process``)."""
        self._reader.close()
        self._reader.continue_owed = False
        self.process()

    def drain(self) -> None:
        """Shutdown: read nothing more; what is in flight is answered, then what waited to
        start (a stream behind a publish, the requests behind it) gets a 503, the last with
        ``Connection: close``; then the connection closes."""
        reader = self._reader
        queue, reader.queue = reader.queue, []
        reader.close()
        reader.refusal = None
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
        reader = self._reader
        if reader.deadline and now >= reader.deadline and not self._inflight:
            conn = self._conn
            if reader.mid_request:
                settings = conn.app.settings
                error = HubError(408, f"request not received within {settings.head_timeout:g}s")
                late = error_response(error)
                late.bodiless = reader.is_head()
                conn.transport.write(encode(late, keep_alive=False))
            conn.close()
