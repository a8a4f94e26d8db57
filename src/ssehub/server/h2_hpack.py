"""HPACK for h2 that remembers: the blocks of repeated response heads, the header lists of
repeated requests.

Encoding a response head costs h2's encoder a table search per field (and Huffman-codes
every literal); an event stream's head is the same few fields every time. Once a head's
fields are all in the table (the second time on a connection), encoding them adds nothing,
so while the table is unchanged their block is the same bytes: ``KeptEncoder`` keeps it, per
connection, with the table's state it was made in (its newest entry, by identity, its length
and size), and encodes anew whenever that state differs.

Decoding a request's header block in pure Python costs about 40 us (a fifth of an HTTP/2
subscribe). A client that opens many streams sends the same request again and again; when
that block neither reads nor writes the dynamic table (static indexes and literals "without
indexing", as a client with no table of its own sends), its header list depends on its bytes
alone (and the decoder's limits), and is kept, for every connection. A block decoded while the
table holds entries, or that adds to it or resizes it, is decoded every time, as hpack would.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack import Decoder, Encoder, HeaderTuple

_KEEP = 256  # blocks kept, for every connection: what a block decodes to is no connection's
_SMALL = 2048  # bytes: larger blocks are decoded every time (the cache stays under ~2 MB)
_kept: dict[tuple[bytes, bool, int, int, int], list[HeaderTuple]] = {}
_HEADS = 8  # response heads kept per connection: an event stream's, and a few answers'

Fields = tuple[HeaderTuple | tuple[bytes, bytes], ...]
_State = tuple[object, int, int]  # the table's newest entry (by identity), entries, size


class KeptEncoder(Encoder):
    """``hpack.Encoder`` keeping the blocks of heads encoded as a tuple of fields (as
    ``h2_heads`` passes them) while the table is as they left it; h2 uses it as its own."""

    def __init__(self, like: Encoder) -> None:
        super().__init__()
        self.header_table = like.header_table
        self.table_size_changes = like.table_size_changes
        self._heads: dict[Fields, tuple[_State, bytes]] = {}

    def _state(self) -> _State:
        table = self.header_table
        entries = table.dynamic_entries
        return (entries[0] if entries else None, len(entries), table.maxsize)

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        if type(headers) is not tuple or not huffman or self.header_table.resized:
            return super().encode(headers, huffman)
        before = self._state()
        kept = self._heads.get(headers)
        if kept is not None:
            (first, entries, size), block = kept
            if first is before[0] and entries == before[1] and size == before[2]:
                return block
        block = super().encode(headers, huffman)
        after = self._state()
        if after[0] is before[0] and after[1:] == before[1:]:  # it changed nothing
            if len(self._heads) >= _HEADS:
                self._heads.clear()
            self._heads[headers] = (after, block)
        return block


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
