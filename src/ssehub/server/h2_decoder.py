"""An HPACK decoder that keeps the header lists of blocks that leave no trace in its table.

Decoding a request's header block in pure Python costs about 40 us (a fifth of an HTTP/2
subscribe). A client that opens many streams sends the same request again and again; when
that block neither reads nor writes the dynamic table (static indexes and literals "without
indexing", as a client with no table of its own sends), its header list depends on its bytes
alone (and the decoder's limits), and is kept, for every connection. A block decoded while the
table holds entries, or that adds to it or resizes it, is decoded every time, as hpack would.
"""

from __future__ import annotations

from collections.abc import Iterable

from hpack import Decoder, HeaderTuple

_KEEP = 256  # blocks kept, for every connection: what a block decodes to is no connection's
_SMALL = 2048  # bytes: larger blocks are decoded every time (the cache stays under ~2 MB)
_kept: dict[tuple[bytes, bool, int, int, int], list[HeaderTuple]] = {}


class KeptDecoder(Decoder):
    """``hpack.Decoder`` with kept header lists; h2 uses it as its own."""

    def __init__(self, like: Decoder) -> None:
        super().__init__(like.max_header_list_size)
        self.max_allowed_table_size = like.max_allowed_table_size
        self.header_table.maxsize = like.header_table.maxsize
        self.header_table.resized = like.header_table.resized

    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        table = self.header_table
        if table.dynamic_entries or type(data) is not bytes or len(data) > _SMALL:
            return super().decode(data, raw)
        size = table.maxsize
        # The limits a block is checked against are part of what it decodes to.
        key = (data, raw, size, self.max_header_list_size, self.max_allowed_table_size)
        kept = _kept.get(key)
        if kept is not None:
            return list(kept)
        headers = list(super().decode(data, raw))
        if not table.dynamic_entries and table.maxsize == size:  # it left no trace
            if len(_kept) >= _KEEP:
                _kept.clear()
            _kept[key] = headers
        return list(headers)
