"""DATA frames for the fan-out, written straight into h2's outgoing buffer.

``H2Connection.send_data`` costs about 5 us a frame (state machines, a frame object, its
serialisation, debug logging calls); a fan-out sends one frame per subscriber stream, so that
was most of an HTTP/2 fan-out. A DATA frame without padding or flags is a 9-byte header and
the payload: this writes exactly that and keeps h2's flow-control windows as ``send_data``
would, so h2 stays the judge of everything else (headers, resets, window updates, GOAWAY).
It relies on two attributes of h2 4.x (``_data_to_send``, the per-stream window); when they
are missing it falls back to ``send_data``.
"""

from __future__ import annotations

import struct

from h2.connection import ConnectionState, H2Connection
from h2.exceptions import StreamClosedError
from h2.stream import StreamState

FRAME_HEAD = struct.Struct(">HBBBL")  # a frame header: length (24 bits: 16 + 8), type, flags, id
FAST = hasattr(H2Connection(), "_data_to_send")  # h2 4.x: frames may be queued directly
_DATA = 0x0
_SENDABLE = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE})


def send_data(h2: H2Connection, stream_id: int, data: bytes) -> bool:
    """Queue ``data`` as one DATA frame on ``stream_id``; ``False`` (nothing queued) when the
    flow-control windows or the peer's frame size do not allow it now. Raises
    ``StreamClosedError`` when the stream is over."""
    stream = h2.streams.get(stream_id)
    if stream is None:
        raise StreamClosedError(stream_id)
    size = len(data)
    if (
        size > stream.outbound_flow_control_window
        or size > h2.outbound_flow_control_window
        or size > h2.max_outbound_frame_size
    ):
        return False
    if (
        not FAST
        or stream.state_machine.state not in _SENDABLE
        or h2.state_machine.state is ConnectionState.CLOSED
    ):  # what only h2 should judge (it raises on a closed or ended stream): let it
        h2.send_data(stream_id, data)
        return True
    out = h2._data_to_send
    out += FRAME_HEAD.pack(size >> 8, size & 0xFF, _DATA, 0, stream_id)
    out += data
    stream.outbound_flow_control_window -= size
    h2.outbound_flow_control_window -= size
    return True
