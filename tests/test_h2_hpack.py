"""HPACK that remembers: the encoder's kept blocks and the decoder's kept header lists are
what hpack's own make, whatever the table does in between."""

from __future__ import annotations

import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple, OversizedHeaderListError

from ssehub.server import h2_hpack
from ssehub.server.h2_hpack import KeptDecoder, KeptEncoder

REQUEST = [
    (b":method", b"GET"),
    (b":path", b"/.well-known/mercure?topic=a"),
    (b":scheme", b"http"),
    (b":authority", b"hub.test"),
    (b"accept", b"text/event-stream"),
]


def _without_indexing(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A block as a client with no dynamic table of its own sends it."""
    return Encoder().encode([NeverIndexedHeaderTuple(n, v) for n, v in headers])


def test_a_block_that_leaves_no_trace_is_kept_and_decodes_the_same() -> None:
    h2_hpack._kept.clear()
    ours, theirs = KeptDecoder(Decoder()), Decoder()
    block = _without_indexing(REQUEST)
    for _ in range(3):
        assert ours.decode(block, raw=True) == theirs.decode(block, raw=True)
    assert len(h2_hpack._kept) == 1
    other = KeptDecoder(Decoder())  # another connection's decoder finds it kept
    assert other.decode(block, raw=True) == theirs.decode(block, raw=True)
    assert len(h2_hpack._kept) == 1


def test_blocks_that_use_the_table_are_decoded_every_time_like_hpack() -> None:
    """An indexing client's blocks fill the table and then refer to it; a block without
    indexing in between must not be answered from before the table changed."""
    h2_hpack._kept.clear()
    ours, theirs = KeptDecoder(Decoder()), Decoder()
    encoder = Encoder()
    plain = _without_indexing(REQUEST)
    blocks = [plain]
    for n in range(4):
        blocks.append(encoder.encode([*REQUEST, (b"x-n", b"%d" % n)]))
        blocks.append(plain)
    for block in blocks:
        assert ours.decode(block, raw=True) == theirs.decode(block, raw=True)
    assert list(h2_hpack._kept) == [(plain, True, 4096, ours.max_header_list_size, 4096)]


def test_a_kept_block_is_still_held_to_a_lower_header_list_limit() -> None:
    ours = KeptDecoder(Decoder())
    block = _without_indexing(REQUEST)
    ours.decode(block)
    ours.max_header_list_size = 50
    with pytest.raises(OversizedHeaderListError):
        ours.decode(block)


def test_a_large_block_is_decoded_every_time_not_kept() -> None:
    h2_hpack._kept.clear()
    ours = KeptDecoder(Decoder())
    block = _without_indexing([*REQUEST, (b"cookie", b"c" * 8000)])
    assert ours.decode(block) == Decoder().decode(block)
    assert not h2_hpack._kept


Head = tuple[tuple[bytes, bytes], ...]
HEAD: Head = (
    (b":status", b"200"),
    (b"server", b"ssehub"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"link", b'</.well-known/mercure>; rel="mercure"'),
)
OTHER: Head = ((b":status", b"404"), (b"content-length", b"10"))
BIG: Head = ((b":status", b"200"), (b"x-big", b"b" * 3000))


@pytest.mark.parametrize("size", [0, 64, 256, 4096])
def test_kept_blocks_are_the_blocks_hpack_encodes_as_the_table_changes(size: int) -> None:
    """Heads again and again, others between (which add entries, evict, or clear a small
    table), and a resize: every block is the one hpack's own encoder makes."""
    ours, theirs = KeptEncoder(Encoder()), Encoder()
    ours.header_table_size = theirs.header_table_size = size
    resize = None
    sequence: list[Head | None] = [
        HEAD,
        HEAD,
        HEAD,
        OTHER,
        HEAD,
        HEAD,
        BIG,
        HEAD,
        HEAD,
        resize,
        HEAD,
        HEAD,
    ]
    for fields in sequence:
        if fields is None:
            ours.header_table_size = theirs.header_table_size = size // 2
            continue
        assert ours.encode(fields) == theirs.encode(fields)
    # A decoder following our blocks reads every head back.
    ours, decoder = KeptEncoder(Encoder()), Decoder()
    ours.header_table_size = decoder.header_table_size = size
    for head in [HEAD, HEAD, OTHER, HEAD, HEAD]:
        assert decoder.decode(ours.encode(head), raw=True) == list(head)
