"""Response HEADERS written straight into h2's outgoing buffer, from a field list checked once.

``H2Connection.send_headers`` costs about 90 us a response: h2 lowercases, strips and checks
every field through a chain of generators, HPACK-encodes them, builds frame objects and walks
the stream's state machine. Every event stream's head is the same few fields, so that was a
third of an HTTP/2 subscribe. Here a field list is normalised and checked by h2's own
functions once and kept, and encoded by h2's encoder (``h2_hpack.KeptEncoder`` keeps the
block of a repeated head while the table is unchanged). The frame is a 9-byte header and the
block, and h2's connection and stream state machines take the same steps as in
``send_headers``, so h2 stays the judge of what may follow (DATA, END_STREAM, resets). Like
``h2_data`` it relies on h2 4.x's ``_data_to_send``, and falls back to ``send_headers``
without it, for a block that may need more than one frame, or on a stream h2 does not know.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from h2.connection import ConnectionInputs, ConnectionState
from h2.stream import StreamInputs
from h2.utilities import (
    HeaderValidationFlags,
    normalize_outbound_headers,
    validate_outbound_headers,
)
from hpack import HeaderTuple

from .h2_data import FAST, FRAME_HEAD

if TYPE_CHECKING:
    from h2.connection import H2Connection

Fields = tuple[tuple[bytes, bytes], ...]

_HEADERS = 0x1
_END_STREAM = 0x1
_END_HEADERS = 0x4
_RESPONSE = HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=True, is_push_promise=False
)
_KEEP = 256  # field lists kept at most: heads differ by CORS origin, Last-Event-ID
_SMALL = 8192  # at most this bound on its block for a head to be kept (~2 KB of fields)

Checked = tuple[HeaderTuple | tuple[bytes, bytes], ...]
_checked: dict[Fields, tuple[Checked, int]] = {}  # and the bound on the block's size


def _check(fields: Fields) -> tuple[Checked, int]:
    """``fields`` as h2 would send them (lower case, trimmed, sensitive ones never indexed),
    checked once, and at most the size of their header block: every string Huffman-coded at
    its worst (30 bits a byte), with its length prefix and the field's first byte. Raises
    h2's ``ProtocolError`` as ``send_headers`` would."""
    found = _checked.get(fields)
    if found is None:
        normal = normalize_outbound_headers(fields, _RESPONSE)
        checked = tuple(validate_outbound_headers(normal, _RESPONSE))
        bound = sum(4 * (len(name) + len(value)) + 11 for name, value in checked)
        found = checked, bound
        if bound <= _SMALL:  # a long one (an echoed Last-Event-ID) is checked every time
            _checked[fields] = found
            if len(_checked) > _KEEP:
                _checked.clear()
    return found


def send_headers(h2: H2Connection, stream_id: int, fields: Fields, end: bool) -> None:
    """HEADERS with ``fields`` (a final response: ``:status`` first, 200 or more) on
    ``stream_id``, as ``h2.send_headers`` would queue them. Raises what it would raise
    (``StreamClosedError`` on a stream that is over)."""
    stream = h2.streams.get(stream_id)
    if not FAST or stream is None or h2.state_machine.state is ConnectionState.CLOSED:
        h2.send_headers(stream_id, fields, end_stream=end)
        return
    checked, bound = _check(fields)
    if bound > h2.max_outbound_frame_size:  # it may need CONTINUATION frames
        h2.send_headers(stream_id, fields, end_stream=end)
        return
    # The steps send_headers takes, in its order: the state machines judge, then the
    # block is encoded (which may change the dynamic table), then queued. The block is
    # h2's encoder's (``h2_hpack.KeptEncoder`` keeps a repeated head's).
    h2.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
    stream.state_machine.process_input(StreamInputs.SEND_HEADERS)
    block = h2.encoder.encode(checked)
    size = len(block)
    flags = _END_HEADERS | _END_STREAM if end else _END_HEADERS
    out = h2._data_to_send
    out += FRAME_HEAD.pack(size >> 8, size & 0xFF, _HEADERS, flags, stream_id)
    out += block
    if end:
        stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
