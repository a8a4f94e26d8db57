"""The HTTP/2 connection protocol on a recording transport, driven by an h2 client: the
hot path's shape (one transport write per fan-out, one DATA frame per stream) and the
stream framing no HTTP/1.1 chunk may leak into."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    ResponseReceived,
    StreamReset,
)
from h2.settings import SettingCodes

from ssehub import Event as HubEvent
from ssehub import Settings
from ssehub.app import App, build
from ssehub.server.h2 import H2Protocol
from ssehub.server.negotiate import PREFACE, protocol_factory
from ssehub.server.protocol import HttpProtocol
from ssehub.server.registry import ConnectionRegistry

from .support import HUB, KEY


class RecordingTransport:
    """Just enough of an asyncio transport: every ``write`` is kept, one entry per call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.protocol: asyncio.BaseProtocol | None = None  # what set_protocol handed it to

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def handed(transport: RecordingTransport) -> asyncio.BaseProtocol | None:
    """The protocol ``transport`` was handed to (a call, so mypy does not narrow it)."""
    return transport.protocol


ANONYMOUS = Settings(publisher_jwt_key=KEY, subscriber_jwt_key=KEY, anonymous=True, heartbeat=0)


def connected(app: App) -> tuple[H2Protocol, RecordingTransport]:
    """An HTTP/2 connection of ``app``'s server on a recording transport."""
    protocol = H2Protocol(app, ConnectionRegistry(app.settings))
    transport = RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


async def until(done: Callable[[], bool]) -> None:
    for _ in range(1000):
        if done():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met")


def test_fan_out_over_ten_streams_is_one_write_with_one_data_frame_each() -> None:
    async def go() -> None:
        app = await build(ANONYMOUS)
        hub = app.hub
        protocol, transport = connected(app)
        client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        streams = []
        for _ in range(10):
            stream_id = client.get_next_available_stream_id()
            client.send_headers(
                stream_id,
                [
                    (":method", "GET"),
                    (":path", HUB + "?topic=t"),
                    (":scheme", "http"),
                    (":authority", "x"),
                ],
                end_stream=True,
            )
            streams.append(stream_id)
        protocol.data_received(client.data_to_send())
        await until(lambda: hub.subscriber_count == 10)
        seen: list[Event] = []
        await until(lambda: protocol._flush_handle is None)
        for data in transport.writes:
            seen.extend(client.receive_data(data))
        assert {e.stream_id for e in seen if isinstance(e, ResponseReceived)} == set(streams)
        transport.writes.clear()

        await hub.publish(HubEvent(("t",), "to all ten", id="e1"))
        await until(lambda: bool(transport.writes) and protocol._flush_handle is None)
        assert len(transport.writes) == 1  # the whole fan-out: one write on this connection
        frames = [
            e for e in client.receive_data(transport.writes[0]) if isinstance(e, DataReceived)
        ]
        assert sorted(e.stream_id for e in frames) == streams  # one DATA frame per stream
        assert {e.data for e in frames} == {b"id: e1\ndata: to all ten\n\n"}  # no chunk framing
        await hub.close()

    asyncio.run(go())


def test_h2c_preface_split_over_reads_still_picks_http2() -> None:
    """With --http2 the first bytes choose the protocol: the preface may arrive in pieces
    (wait for the rest), anything else is HTTP/1.x at once."""

    async def go() -> None:
        settings = Settings(publisher_jwt_key=KEY, subscriber_jwt_key=KEY, http2=True)
        app = await build(settings)
        registry = ConnectionRegistry(settings)
        factory = protocol_factory(app, registry, tls=False)

        h2_side = RecordingTransport()
        first = factory()
        first.connection_made(h2_side)  # type: ignore[arg-type]
        client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        hello = client.data_to_send()
        assert hello.startswith(PREFACE)
        first.data_received(hello[:7])
        assert handed(h2_side) is None  # not decided on a prefix of the preface
        first.data_received(hello[7:])
        assert isinstance(handed(h2_side), H2Protocol)
        events = client.receive_data(b"".join(h2_side.writes))  # the hub's SETTINGS
        assert events and not h2_side.closing

        h1_side = RecordingTransport()
        second = factory()
        second.connection_made(h1_side)  # type: ignore[arg-type]
        second.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert isinstance(handed(h1_side), HttpProtocol)
        await until(lambda: b"".join(h1_side.writes).startswith(b"HTTP/1.1 200 OK"))
        await app.close()

    asyncio.run(go())


def _request(client: H2Connection, path: str, *extra: tuple[str, str]) -> int:
    stream_id = client.get_next_available_stream_id()
    headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")]
    client.send_headers(stream_id, [*headers, *extra], end_stream=True)
    return stream_id


@pytest.mark.parametrize("table_size", [0, 4096], ids=["no-hpack-table", "hpack-table"])
def test_a_hundred_streams_opened_in_one_read_are_live_with_their_heads_in_its_write(
    table_size: int,
) -> None:
    """A subscribe with nothing to replay starts at once: every stream of the read is live
    when it returns, and their heads go out in its one write, before any event."""

    async def go() -> None:
        app = await build(ANONYMOUS)
        hub = app.hub
        protocol, transport = connected(app)
        client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        client.update_settings({SettingCodes.HEADER_TABLE_SIZE: table_size})
        client.receive_data(b"".join(transport.writes))  # the hub's SETTINGS
        transport.writes.clear()
        streams = [_request(client, HUB + "?topic=t") for _ in range(100)]
        protocol.data_received(client.data_to_send())
        assert hub.subscriber_count == 100
        assert sum(len(view.live) for view in hub.views.by_key.values()) == 100
        assert len(transport.writes) == 1
        events = client.receive_data(transport.writes.pop())
        heads = {e.stream_id: dict(e.headers) for e in events if isinstance(e, ResponseReceived)}
        assert sorted(heads) == streams
        for head in heads.values():
            assert head[b":status"] == b"200"
            assert head[b"content-type"] == b"text/event-stream; charset=utf-8"
        first = {e.stream_id: e.data for e in events if isinstance(e, DataReceived)}
        assert sorted(first) == streams  # the opening comment on each

        await hub.publish(HubEvent(("t",), "to all", id="e1"))
        await until(lambda: bool(transport.writes) and protocol._flush_handle is None)
        frames = [
            e
            for data in transport.writes
            for e in client.receive_data(data)
            if isinstance(e, DataReceived)
        ]
        assert sorted(e.stream_id for e in frames) == streams
        assert {e.data for e in frames} == {b"id: e1\ndata: to all\n\n"}
        await hub.close()

    asyncio.run(go())


def test_a_stream_with_last_event_id_is_replayed_beside_one_that_starts_at_once() -> None:
    async def go() -> None:
        app = await build(ANONYMOUS)
        hub = app.hub
        for n in (1, 2):
            await hub.publish(HubEvent(("t",), f"past {n}", id=f"p{n}"))
        protocol, transport = connected(app)
        client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        fresh = _request(client, HUB + "?topic=t")
        resumed = _request(client, HUB + "?topic=t", ("last-event-id", "p1"))
        protocol.data_received(client.data_to_send())
        await until(lambda: hub.subscriber_count == 2 and protocol._flush_handle is None)
        await hub.publish(HubEvent(("t",), "live", id="l1"))
        await until(lambda: protocol._flush_handle is None)
        await asyncio.sleep(0.01)
        body: dict[int, bytes] = {fresh: b"", resumed: b""}
        heads = {}
        for data in transport.writes:
            for e in client.receive_data(data):
                if isinstance(e, ResponseReceived):
                    heads[e.stream_id] = dict(e.headers)
                elif isinstance(e, DataReceived):
                    body[e.stream_id] += e.data
        assert b"last-event-id" not in heads[fresh]
        assert heads[resumed][b"last-event-id"] == b"p1"
        assert b"past" not in body[fresh] and b"id: l1\n" in body[fresh]
        assert b"id: p1\n" not in body[resumed]
        assert body[resumed].index(b"id: p2\n") < body[resumed].index(b"id: l1\n")
        await hub.close()

    asyncio.run(go())


MALFORMED = {
    "upper-case name": [("X-Upper", "v")],
    "connection-specific": [("connection", "keep-alive")],
    "pseudo-header after a field": [("accept", "*/*"), (":foo", "bar")],
    "newline in a value": [("accept", "a\nb")],
}


@pytest.mark.parametrize("extra", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_request_after_good_ones_ends_the_connection_with_protocol_error(
    extra: list[tuple[str, str]],
) -> None:
    """The hub checks received headers itself (once per distinct list): a list it has not
    seen is checked even after good ones were kept, and refusing it is GOAWAY(PROTOCOL_ERROR),
    as h2 does when it checks them."""

    async def go() -> None:
        app = await build(ANONYMOUS)
        protocol, transport = connected(app)
        config = H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        client = H2Connection(config)
        client.initiate_connection()
        for _ in range(2):
            _request(client, HUB + "?topic=t")
        protocol.data_received(client.data_to_send())
        assert app.hub.subscriber_count == 2 and not transport.closing
        _request(client, HUB + "?topic=t", *extra)
        protocol.data_received(client.data_to_send())
        assert transport.closing
        events = [e for data in transport.writes for e in client.receive_data(data)]
        ended = [e for e in events if isinstance(e, ConnectionTerminated)]
        assert [e.error_code for e in ended] == [ErrorCodes.PROTOCOL_ERROR]
        assert app.hub.subscriber_count == 0
        await app.close()

    asyncio.run(go())


def test_a_stream_that_fails_to_start_is_reset_and_the_rest_of_its_read_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        app = await build(ANONYMOUS)
        hub = app.hub
        real = hub.subscribe_now
        starts = 0

        def flaky(sub: Any, preamble: Any) -> None:
            nonlocal starts
            starts += 1
            if starts == 2:
                raise RuntimeError("a fault of the hub's")
            real(sub, preamble)

        hub.subscribe_now = flaky  # type: ignore[method-assign]
        protocol, transport = connected(app)
        client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        streams = [_request(client, HUB + "?topic=t") for _ in range(3)]
        protocol.data_received(client.data_to_send())
        assert hub.subscriber_count == 2 and not transport.closing
        events = [e for data in transport.writes for e in client.receive_data(data)]
        reset = [e.stream_id for e in events if isinstance(e, StreamReset)]
        heads = [e.stream_id for e in events if isinstance(e, ResponseReceived)]
        assert reset == [streams[1]] and heads == [streams[0], streams[2]]
        assert "a stream failed to start" in caplog.text
        await hub.close()

    asyncio.run(go())
