"""Response HEADERS queued straight into h2's buffer: the same bytes ``send_headers`` queues,
the same stream states after them, the same refusals."""

from __future__ import annotations

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ResponseReceived, StreamEnded
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes

from ssehub.server.h2_heads import Fields, send_headers
from ssehub.server.h2_hpack import KeptEncoder

HEAD: Fields = (
    (b":status", b"200"),
    (b"server", b"ssehub"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"private, no-cache, no-store, must-revalidate, max-age=0"),
    (b"link", b'</.well-known/mercure>; rel="mercure"'),
)


def pair(table_size: int | None, streams: int) -> tuple[H2Connection, H2Connection, list[int]]:
    """A client (announcing ``table_size`` for the server's HPACK table, if not None) and a
    server that has received its ``streams`` requests and acknowledged its SETTINGS."""
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    if table_size is not None:
        client.update_settings({SettingCodes.HEADER_TABLE_SIZE: table_size})
    ids = []
    for _ in range(streams):
        stream_id = client.get_next_available_stream_id()
        request = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
        client.send_headers(stream_id, request, end_stream=True)
        ids.append(stream_id)
    server = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # the client's SETTINGS ACK
    server.data_to_send()
    return client, server, ids


@pytest.mark.parametrize("table_size", [0, None, 64], ids=["no-table", "default", "small"])
@pytest.mark.parametrize("end", [False, True])
def test_the_bytes_are_those_of_send_headers(table_size: int | None, end: bool) -> None:
    """Stream after stream, so a dynamic table fills and is searched, and a cached block is
    reused; and one other head in between, which a table must account for."""
    _, ours, ids = pair(table_size, 8)
    ours.encoder = KeptEncoder(ours.encoder)  # as the hub's connections have it
    _, theirs, _ = pair(table_size, 8)
    other: Fields = ((b":status", b"200"), (b"content-length", b"3"))
    for n, stream_id in enumerate(ids):
        fields = other if n in (3, 6) else HEAD
        send_headers(ours, stream_id, fields, end)
        theirs.send_headers(stream_id, fields, end_stream=end)
        assert ours.data_to_send() == theirs.data_to_send()
        assert ours.streams[stream_id].state_machine.state == (
            theirs.streams[stream_id].state_machine.state
        )


def test_a_client_reads_every_head_and_an_ended_stream_takes_nothing_more() -> None:
    client, server, ids = pair(0, 3)
    for stream_id in ids:
        send_headers(server, stream_id, HEAD, stream_id == ids[-1])
    events = client.receive_data(server.data_to_send())
    heads = {e.stream_id: e.headers for e in events if isinstance(e, ResponseReceived)}
    assert heads == {stream_id: list(HEAD) for stream_id in ids}
    assert [e.stream_id for e in events if isinstance(e, StreamEnded)] == [ids[-1]]
    server.send_data(ids[0], b"data: x\n\n")  # open: takes DATA
    with pytest.raises(StreamClosedError):
        server.send_data(ids[-1], b"data: x\n\n")


def test_a_head_too_large_for_one_frame_goes_in_continuation_frames() -> None:
    client, server, ids = pair(0, 1)
    big = (*HEAD, (b"x-big", b"v" * 20_000))
    send_headers(server, ids[0], big, False)
    events = client.receive_data(server.data_to_send())
    heads = [e.headers for e in events if isinstance(e, ResponseReceived)]
    assert heads == [list(big)]


ODD: dict[str, Fields] = {
    "connection header": (*HEAD, (b"connection", b"close")),
    "request pseudo-header": (*HEAD, (b":path", b"/")),
    "upper case, spaces": ((b":status", b"200"), (b"X-Thing", b" v ")),
    "te": (*HEAD, (b"te", b"gzip")),
}


@pytest.mark.parametrize("fields", ODD.values(), ids=ODD.keys())
def test_odd_fields_are_refused_or_normalised_as_send_headers_does(fields: Fields) -> None:
    _, ours, ids = pair(0, 1)
    _, theirs, _ = pair(0, 1)
    try:
        theirs.send_headers(ids[0], fields)
    except ProtocolError as exc:
        with pytest.raises(type(exc)):
            send_headers(ours, ids[0], fields, False)
        return
    send_headers(ours, ids[0], fields, False)
    assert ours.data_to_send() == theirs.data_to_send()


def test_a_stream_that_is_over_is_refused() -> None:
    _, server, ids = pair(0, 1)
    send_headers(server, ids[0], HEAD, True)
    with pytest.raises(StreamClosedError):
        send_headers(server, ids[0], HEAD, False)
