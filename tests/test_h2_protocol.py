"""The HTTP/2 connection protocol on a recording transport, driven by an h2 client: the
hot path's shape (one transport write per fan-out, one DATA frame per stream) and the
stream framing no HTTP/1.1 chunk may leak into."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, Event, ResponseReceived

from ssehub import Event as HubEvent
from ssehub import Settings
from ssehub.app import build
from ssehub.server.h2 import H2Protocol
from ssehub.server.registry import ConnectionRegistry

from .support import HUB, KEY


class RecordingTransport:
    """Just enough of an asyncio transport: every ``write`` is kept, one entry per call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

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


async def until(done: Callable[[], bool]) -> None:
    for _ in range(1000):
        if done():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met")


def test_fan_out_over_ten_streams_is_one_write_with_one_data_frame_each() -> None:
    async def go() -> None:
        settings = Settings(
            publisher_jwt_key=KEY, subscriber_jwt_key=KEY, anonymous=True, heartbeat=0
        )
        app = await build(settings)
        hub = app.hub
        protocol = H2Protocol(app, ConnectionRegistry(settings))
        transport = RecordingTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
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
