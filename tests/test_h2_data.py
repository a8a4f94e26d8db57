"""ssehub's own DATA frames: what an h2 client reads, and the windows kept as h2 keeps them."""

from __future__ import annotations

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, StreamReset
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings

from ssehub.server.h2_data import send_data

HEAD = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]


def pair(window: int = 65_535, streams: int = 3) -> tuple[H2Connection, H2Connection, list[int]]:
    """A client and a server with ``streams`` requests answered by headers, windows set."""
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.local_settings = Settings(
        client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: window}
    )
    client.initiate_connection()
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    ids = []
    for _ in range(streams):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, HEAD, end_stream=True)
        ids.append(stream_id)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    for stream_id in ids:
        server.send_headers(stream_id, [(":status", "200")])
    client.receive_data(server.data_to_send())
    return client, server, ids


def test_frames_reach_an_h2_client_and_windows_move_as_h2_moves_them() -> None:
    client, server, ids = pair()
    _, twin, _ = pair()
    for n, stream_id in enumerate(ids):
        data = b"data: %d\n\n" % n * (n + 1)
        assert send_data(server, stream_id, data)
        twin.send_data(stream_id, data)
        assert server.local_flow_control_window(stream_id) == twin.local_flow_control_window(
            stream_id
        )
    assert server.outbound_flow_control_window == twin.outbound_flow_control_window
    wire = server.data_to_send()
    assert wire == twin.data_to_send()  # byte for byte what h2 itself would send
    got = [e for e in client.receive_data(wire) if isinstance(e, DataReceived)]
    assert [(e.stream_id, e.data) for e in got] == [
        (stream_id, b"data: %d\n\n" % n * (n + 1)) for n, stream_id in enumerate(ids)
    ]


def test_nothing_is_queued_when_a_window_or_the_frame_size_forbids_it() -> None:
    _, server, ids = pair(window=10)
    assert not send_data(server, ids[0], b"x" * 11)
    assert server.data_to_send() == b""
    assert server.local_flow_control_window(ids[0]) == 10
    assert send_data(server, ids[0], b"x" * 10)
    assert not send_data(server, ids[0], b"x")  # the stream's window is spent
    _, big, big_ids = pair(window=1 << 20)
    assert not send_data(big, big_ids[0], b"x" * (big.max_outbound_frame_size + 1))


def test_a_reset_or_ended_stream_is_refused() -> None:
    client, server, ids = pair()
    client.reset_stream(ids[0])
    events = server.receive_data(client.data_to_send())
    assert any(isinstance(e, StreamReset) for e in events)
    with pytest.raises(StreamClosedError):
        send_data(server, ids[0], b"late")
    server.end_stream(ids[1])  # half-closed (local): h2 judges, and refuses
    with pytest.raises(ProtocolError):
        send_data(server, ids[1], b"after the end")
    assert send_data(server, ids[2], b"still open")
