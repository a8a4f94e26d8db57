"""What opening an HTTP/2 subscriber stream costs the hub, in process CPU time (steady on a
busy machine): connections of 100 streams each, opened as the C reader of ``load.py --http 2``
opens them (one read: the preface, SETTINGS with the default HPACK table as browsers keep, 100
HEADERS), through ``H2Protocol`` on a transport that only counts, until every stream is live.
``--table 0`` is a client that keeps no HPACK table (the hub's heads are then one cached block).

    python benchmarks/h2_connect.py [--connections 195] [--streams 100] [--table 4096]
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time
from typing import Any

import uvloop

from ssehub import Settings
from ssehub.app import build
from ssehub.server.h2 import H2Protocol
from ssehub.server.registry import ConnectionRegistry

_FRAME = struct.Struct(">HBBBL")


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    size = len(payload)
    return _FRAME.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """A field "without indexing", names and values not Huffman-coded: as the C reader."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def opening(streams: int, table: int) -> bytes:
    """What a C reader connection sends first: preface, SETTINGS, WINDOW_UPDATE, HEADERS."""
    block = b"".join(
        _literal(n, v)
        for n, v in (
            (b":method", b"GET"),
            (b":path", b"/.well-known/mercure?topic=urn%3Abench%3Afanout"),
            (b":scheme", b"http"),
            (b":authority", b"127.0.0.1:40000"),
            (b"accept", b"text/event-stream"),
        )
    )
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    out += _frame(0x4, 0, 0, struct.pack(">HLHLHL", 1, table, 2, 0, 4, 1 << 20))
    out += _frame(0x8, 0, 0, struct.pack(">L", 1 << 30))
    for n in range(streams):
        out += _frame(0x1, 0x5, 2 * n + 1, block)  # END_STREAM | END_HEADERS
    return out


class CountingTransport:
    """Just enough of a transport: counts writes and bytes."""

    def __init__(self) -> None:
        self.writes = 0
        self.size = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.size += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def measure(connections: int, streams: int, table: int) -> None:
    settings = Settings(
        anonymous=True,
        heartbeat=0,
        publisher_jwt_key="bench-key-0123456789-0123456789-0123456789",
        max_connections=connections + 10,
        max_connections_per_ip=0,
    )
    app = await build(settings)
    registry = ConnectionRegistry(settings)
    hello = opening(streams, table)
    total = connections * streams
    transports = []
    started = time.process_time()
    for _ in range(connections):
        protocol = H2Protocol(app, registry)
        transport = CountingTransport()
        transports.append(transport)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(hello)
        await asyncio.sleep(0)  # a task per stream would run here
    views = app.hub.views
    while views.subscribers < total or any(v.waiting for v in views.by_key.values()):
        await asyncio.sleep(0)
    per_stream = (time.process_time() - started) / total
    writes = sum(t.writes for t in transports)
    print(
        f"{total:,} streams on {connections} connections: {per_stream * 1e6:.1f} us per stream "
        f"({1 / per_stream:,.0f} streams/s), {writes} transport writes"
    )
    await app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=195)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--table", type=int, default=4096, help="SETTINGS_HEADER_TABLE_SIZE")
    args = parser.parse_args()
    uvloop.run(measure(args.connections, args.streams, args.table))


if __name__ == "__main__":
    main()
