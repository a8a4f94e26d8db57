"""What HTTP/2 adds per stream to a fan-out, in process CPU time (steady on a busy machine):
the window check and ``send_data`` of the ``h2`` state machine for each stream, then one
``data_to_send`` per connection; the same with ssehub's own DATA frames
(``ssehub.server.h2_data``); and what the chunk framing of a view's buffer costs.

    python benchmarks/h2_send.py [--streams 100] [--rounds 300] [--payload 100]
"""

from __future__ import annotations

import argparse
import time

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes, Settings

from ssehub.server.h2_data import send_data
from ssehub.server.http import chunk


def connected(streams: int) -> tuple[H2Connection, list[int]]:
    """A server-side h2 connection with ``streams`` open response streams, windows wide."""
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.local_settings = Settings(
        client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1}
    )
    client.initiate_connection()
    client.increment_flow_control_window((1 << 31) - 1 - 65_535)
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    ids = []
    head = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    for _ in range(streams):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, head, end_stream=True)
        ids.append(stream_id)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    for stream_id in ids:
        server.send_headers(stream_id, [(":status", "200")])
    server.data_to_send()
    return server, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--payload", type=int, default=100)
    args = parser.parse_args()
    event = b"id: urn:uuid:00000000-0000-0000-0000-000000000000\ndata: "
    event += b"x" * args.payload + b"\n\n"
    server, ids = connected(args.streams)
    started = time.process_time()
    for _ in range(args.rounds):
        for stream_id in ids:
            server.local_flow_control_window(stream_id)
            server.send_data(stream_id, event)
        server.data_to_send()
    per_stream = (time.process_time() - started) / args.rounds / len(ids)
    print(f"h2 send_data: {per_stream * 1e6:.2f} us per stream per fan-out ({len(ids)} streams)")
    server, ids = connected(args.streams)
    started = time.process_time()
    for _ in range(args.rounds):
        for stream_id in ids:
            send_data(server, stream_id, event)
        server.data_to_send()
    per_stream = (time.process_time() - started) / args.rounds / len(ids)
    print(f"ssehub's DATA frames: {per_stream * 1e6:.2f} us per stream per fan-out")
    batch = event * 64  # a coalesced fan-out of 64 events
    started = time.process_time()
    for _ in range(args.rounds * 100):
        chunk(batch)
    per_view = (time.process_time() - started) / (args.rounds * 100)
    print(f"chunk framing: {per_view * 1e6:.2f} us per view per fan-out ({len(batch)} bytes)")


if __name__ == "__main__":
    main()
