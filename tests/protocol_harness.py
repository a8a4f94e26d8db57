"""The server's connection protocol in process: a fake transport, a memory hub, one event loop.

No socket and no subprocess: bytes go in through ``data_received`` and come out of
``MockTransport.buffer``. Shaped on uvicorn's ``tests/protocols`` harness.

``make_protocol`` is the only place that knows how the server builds a connection's protocol
object; when that construction changes, only that function changes. Tests drive the object
through the ``asyncio.Protocol`` interface alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlencode

from ssehub.app import App, build
from ssehub.hub import Hub
from ssehub.server import ConnectionRegistry, HttpProtocol
from ssehub.settings import Settings
from ssehub.sse import Decoder, ServerEvent

from .support import HUB, KEY, Dechunker, iter_responses, make_token, until

# asyncio's own default for a transport's write buffer.
DEFAULT_HIGH_WATER = 64 * 1024


class MockTransport:
    """Records what the protocol does to its connection.

    The peer reads at once unless the test ``stall``s it; then, like a real transport, the
    unsent bytes grow, ``write`` calls ``pause_writing`` past the high-water mark, and
    ``peer_reads`` calls ``resume_writing``. ``close`` and ``abort`` call ``connection_lost``
    soon after, as asyncio does."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        self.peer = peer
        self.protocol: asyncio.Protocol | None = None
        self.buffer = bytearray()  # everything written, read or not
        self.writes: list[bytes] = []
        self.unsent = 0  # written, not yet read by the peer
        self.stalled = False
        self.after_close: list[bytes] = []  # writes a real transport would have dropped
        self.unread: list[bytes] = []  # the client's bytes held while reading is paused
        self.high = DEFAULT_HIGH_WATER
        self.low = DEFAULT_HIGH_WATER // 4
        self.writing_paused = False
        self.reading_paused = False
        self.reading_calls: list[str] = []  # "pause", "resume", in order
        self.eof_written = False
        self.closed = False
        self.aborted = False
        self.lost = False

    # -- what the protocol calls -----------------------------------------------------------------

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": self.peer, "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes) -> None:
        if self.eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")  # as asyncio does
        if self.closed:
            self.after_close.append(bytes(data))
            return
        self.writes.append(bytes(data))
        self.buffer += data
        if not self.stalled:
            return
        self.unsent += len(data)
        if not self.writing_paused and self.unsent > self.high and self.protocol is not None:
            self.writing_paused = True
            self.protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self._lose)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading_paused = True
        self.reading_calls.append("pause")

    def resume_reading(self) -> None:
        self.reading_paused = False
        self.reading_calls.append("resume")
        if self.unread:  # like asyncio, read again on a later loop iteration
            asyncio.get_running_loop().call_soon(self._deliver_unread)

    def is_reading(self) -> bool:
        return not self.reading_paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = DEFAULT_HIGH_WATER if high is None else high
        self.low = self.high // 4 if low is None else low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.low, self.high

    def get_write_buffer_size(self) -> int:
        return self.unsent

    # -- what the test does ----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """The client sends ``data``: the protocol gets it unless reading is paused (then it
        waits in the kernel, here ``unread``) or the connection is closed (then it is lost)."""
        if self.closed:
            return
        if self.reading_paused or self.unread:
            self.unread.append(data)
            return
        assert self.protocol is not None
        self.protocol.data_received(data)

    def _deliver_unread(self) -> None:
        while self.unread and not self.reading_paused and not self.closed:
            assert self.protocol is not None
            self.protocol.data_received(self.unread.pop(0))

    def stall(self) -> None:
        """The client stops reading: what is written from now on stays unsent."""
        self.stalled = True

    def peer_reads(self) -> None:
        """The client reads everything sent so far, and goes on reading; writing resumes."""
        self.unsent = 0
        self.stalled = False
        if self.writing_paused and self.protocol is not None and not self.closed:
            self.writing_paused = False
            self.protocol.resume_writing()

    def peer_closes(self) -> None:
        """The client goes away."""
        self.closed = True
        self._lose()

    def _lose(self) -> None:
        if not self.lost and self.protocol is not None:
            self.lost = True
            self.protocol.connection_lost(None)


@dataclass
class Connection:
    """One client connection to an in-process server."""

    protocol: asyncio.Protocol
    transport: MockTransport
    hub: Hub
    server: object  # what further connections to the same server share; opaque to tests
    decoder: Decoder = field(default_factory=Decoder)
    dechunker: Dechunker | None = None  # an HTTP/1.1 stream's body is chunked
    _read: int = 0

    def send(self, data: bytes) -> None:
        self.transport.feed(data)

    def responses(self) -> list[tuple[int, dict[str, str], bytes]]:
        """Every complete response written so far, in order (bodies by Content-Length)."""
        return list(iter_responses(bytes(self.transport.buffer)))

    async def answers(self, count: int) -> list[tuple[int, dict[str, str], bytes]]:
        """Wait until ``count`` responses were written; return them."""
        await until(lambda: len(self.responses()) >= count, f"{count} responses")
        return self.responses()

    def stream_head(self) -> tuple[int, dict[str, str]] | None:
        """An event stream's status and headers, once written."""
        raw = bytes(self.transport.buffer)
        if b"\r\n\r\n" not in raw:
            return None
        status, headers, _ = next(iter_responses(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"))
        return status, headers

    def events(self) -> list[ServerEvent]:
        """Events of the stream's body written since the last call (``decoder`` counts the
        comments)."""
        raw = bytes(self.transport.buffer)
        if not self._read:
            self._read = raw.index(b"\r\n\r\n") + 4
            head = self.stream_head()
            if head is not None and head[1].get("transfer-encoding") == "chunked":
                self.dechunker = Dechunker()
        new, self._read = raw[self._read :], len(raw)
        if self.dechunker is not None:
            new = self.dechunker.feed(new)
        return self.decoder.feed(new)

    async def next_events(self, count: int) -> list[ServerEvent]:
        """Wait for the stream's next ``count`` events."""
        got: list[ServerEvent] = []

        def enough() -> bool:
            got.extend(self.events())
            return len(got) >= count

        await until(enough, f"{count} events")
        return got


async def make_protocol(
    settings: Settings | None = None,
    *,
    peer: tuple[str, int] = ("127.0.0.1", 40000),
    server: object | None = None,
) -> Connection:
    """A connected protocol: a new server (hub on the memory backend) from ``settings``, or
    another connection to ``server`` (a previous ``Connection.server``).

    The one place that builds the server's protocol object: adapt this when it changes."""
    if server is None:
        settings = settings or Settings(publisher_jwt_key=KEY, subscriber_jwt_key=KEY)
        app = await build(settings)
        # Every fan-out runs before its publisher's await returns, so a test may publish and
        # then subscribe expecting all of it in history. With the default, a fan-out after a
        # costly one (on a loaded machine any may look costly) waits for company, and what it
        # holds reaches a new subscriber live, not replayed: right, but not what tests set up.
        app.hub.fanout.max_coalesce = 0
        registry = ConnectionRegistry(settings)
        app.open_connections = registry.__len__
        server = (app, registry)
    app, registry = cast(tuple[App, ConnectionRegistry], server)
    transport = MockTransport(peer)
    protocol = HttpProtocol(app, registry)
    transport.protocol = protocol
    protocol.connection_made(cast(asyncio.Transport, transport))
    return Connection(protocol, transport, app.hub, server)


async def close_server(conn: Connection) -> None:
    """Stop the hub behind ``conn`` (its heartbeat timer, its backend)."""
    await conn.hub.close()


def sweep(conn: Connection, at: float) -> None:
    """The server's once-a-second look at every connection's deadlines, as if at loop time
    ``at``."""
    _, registry = cast(tuple[App, ConnectionRegistry], conn.server)
    for each in list(registry.connections):
        each.check(at)


class _Listener:
    """What the drain closes of the listening server: nothing to close here."""

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


async def shut_down(conn: Connection) -> None:
    """SIGTERM: the server behind ``conn`` drains every connection and stops its hub, as
    ``serve`` does (instead of ``close_server``)."""
    app, registry = cast(tuple[App, ConnectionRegistry], conn.server)
    await registry.drain(cast(asyncio.Server, _Listener()), app.close(), app.hub.settle)


# -- requests -------------------------------------------------------------------------------------

PUBLISHER = make_token(publish=["*"])
SUBSCRIBER = make_token(subscribe=["*"])


def request(
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    version: str = "1.1",
) -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: hub.test"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def publish(
    topic: str, data: str = "", *, token: str = PUBLISHER, close: bool = False, **fields: str
) -> bytes:
    """A publish request, form-encoded as the spec has it."""
    form = urlencode([("topic", topic), ("data", data), *fields.items()]).encode()
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    if close:
        headers["Connection"] = "close"
    return request("POST", HUB, headers, form)


def subscribe(*topics: str, token: str = SUBSCRIBER, last_event_id: str | None = None) -> bytes:
    headers = {"Authorization": f"Bearer {token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return request("GET", HUB + "?" + urlencode([("topic", t) for t in topics]), headers)
