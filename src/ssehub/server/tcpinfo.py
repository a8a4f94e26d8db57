"""Is a reader making progress? The kernel knows: bytes queued and bytes acknowledged.

A transport's own buffer only fills once the kernel's send buffer (often megabytes) is full,
so a reader that stopped can sit on a lot of data unseen. Linux reports the send queue
(``TIOCOUTQ``) and the bytes the peer acknowledged (``tcpi_bytes_acked`` in ``TCP_INFO``).
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios

_ACKED = struct.Struct("=Q")
_ACKED_OFFSET = 120  # tcpi_bytes_acked in struct tcp_info, stable since Linux 4.1
_TCP_INFO = getattr(socket, "TCP_INFO", None)


def progress(transport: asyncio.Transport) -> tuple[int, int]:
    """(bytes not yet delivered, bytes the peer has acknowledged so far)."""
    unsent = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is None or _TCP_INFO is None:
        return unsent, 0
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        unsent += int.from_bytes(queued, "little")
        if not unsent:
            return 0, 0  # all delivered: how much was acknowledged does not matter
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    except OSError:
        return unsent, 0
    if len(info) < _ACKED_OFFSET + _ACKED.size:
        return unsent, 0
    (acked,) = _ACKED.unpack_from(info, _ACKED_OFFSET)
    return unsent, int(acked)
