"""The SSE wire format against the HTML standard's parsing rules, table-driven and by property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssehub.sse import (
    HEARTBEAT,
    Decoder,
    ServerEvent,
    encode_comment,
    encode_event,
    normalize_newlines,
)


@pytest.mark.parametrize(
    ("kwargs", "wire"),
    [
        ({"data": "hi"}, b"data: hi\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": "  two spaces"}, b"data:   two spaces\n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\rb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\n\rb\n"}, b"data: a\ndata: \ndata: b\ndata: \n\n"),
        (
            {"data": "x", "id": "urn:1", "event": "update", "retry": 1500},
            b"id: urn:1\nevent: update\nretry: 1500\ndata: x\n\n",
        ),
        ({"data": "é", "id": " lead"}, "id:  lead\ndata: é\n\n".encode()),
    ],
)
def test_encode(kwargs: dict[str, object], wire: bytes) -> None:
    assert encode_event(**kwargs) == wire  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"id": "a\nb"}, {"id": "a\rb"}, {"id": "a\x00b"}, {"event": "a\nb"}, {"retry": -1}],
)
def test_encode_refuses_what_would_break_framing(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        encode_event("x", **kwargs)  # type: ignore[arg-type]


def test_comments() -> None:
    assert encode_comment() == HEARTBEAT == b":\n"
    assert encode_comment("a\nb") == b": a\n: b\n"
    decoder = Decoder()
    assert decoder.feed(b":\n: x\n\n") == []
    assert decoder.comments_seen == 2


def feed(stream: bytes) -> list[ServerEvent]:
    return Decoder().feed(stream)


@pytest.mark.parametrize(
    ("stream", "events"),
    [
        # The standard's own examples.
        (b"data: YHOO\ndata: +2\ndata: 10\n\n", [ServerEvent("YHOO\n+2\n10")]),
        (
            b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
            b"data:  third event\n\n",
            [
                ServerEvent("first event", id="1"),
                ServerEvent("second event", id=""),
                ServerEvent(" third event", id=""),
            ],
        ),
        (b"data\n\ndata\ndata\n\ndata:", [ServerEvent(""), ServerEvent("\n")]),
        (b"data:test\n\ndata: test\n\n", [ServerEvent("test"), ServerEvent("test")]),
        # Line ends: CR, LF, CRLF, mixed.
        (
            b"data: a\r\rdata: b\r\n\r\ndata: c\n\n",
            [ServerEvent("a"), ServerEvent("b"), ServerEvent("c")],
        ),
        # One BOM at the start is dropped; a second is data.
        (b"\xef\xbb\xbfdata: x\n\n", [ServerEvent("x")]),
        (b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", []),
        # Type, id persistence, NUL in id ignored, unknown fields ignored.
        (
            b"event: up\nid: 7\ndata: a\n\ndata: b\n\nid: x\x00y\nfoo: bar\ndata: c\n\n",
            [ServerEvent("a", "up", "7"), ServerEvent("b", id="7"), ServerEvent("c", id="7")],
        ),
        # retry: digits only, after the one stripped space.
        (b"retry: 1000\ndata: a\n\n", [ServerEvent("a", retry=1000)]),
        (
            b"retry:  1000\ndata: a\n\nretry: 10a\ndata: b\n\nretry:\ndata: c\n\n",
            [ServerEvent("a"), ServerEvent("b"), ServerEvent("c")],
        ),
        # An event without data is not dispatched, but its id still counts.
        (b"id: 5\n\ndata: a\n\n", [ServerEvent("a", id="5")]),
        # Invalid UTF-8 is replaced, not fatal.
        (b"data: \xff\n\n", [ServerEvent("\ufffd")]),
    ],
)
def test_decode(stream: bytes, events: list[ServerEvent]) -> None:
    assert feed(stream) == events


def test_cr_split_from_its_lf_is_one_line_end() -> None:
    decoder = Decoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r\n") == [ServerEvent("a\nb")]


def test_bom_split_across_chunks() -> None:
    decoder = Decoder()
    out = []
    for byte in b"\xef\xbb\xbfdata: \xc3\xa9\n\n":
        out += decoder.feed(bytes([byte]))
    assert out == [ServerEvent("é")]


def test_retry_and_last_id_attributes() -> None:
    decoder = Decoder()
    decoder.feed(b"retry: 250\n\nid: z\ndata: q\n\n")
    assert decoder.retry == 250
    assert decoder.last_event_id == "z"


def test_bounds() -> None:
    with pytest.raises(ValueError, match="line"):
        Decoder(max_line=10).feed(b"data: " + b"x" * 20)
    with pytest.raises(ValueError, match="data"):
        Decoder(max_event=10).feed(b"data: 123456\ndata: 123456\n")


text = st.text(st.characters(codec="utf-8"))
ids = st.text(st.characters(codec="utf-8", blacklist_characters="\r\n\x00"))
types = st.text(st.characters(codec="utf-8", blacklist_characters="\r\n"))
retries = st.none() | st.integers(min_value=0, max_value=2**31)


@settings(max_examples=300)
@given(data=text, id=st.none() | ids, event=st.none() | types, retry=retries)
def test_decode_inverts_encode(
    data: str, id: str | None, event: str | None, retry: int | None
) -> None:
    decoder = Decoder()
    got = decoder.feed(encode_event(data, id=id, event=event, retry=retry))
    expected = ServerEvent(normalize_newlines(data), event or "message", id or "", retry)
    assert got == [expected]


events = st.lists(st.tuples(text, st.none() | ids, st.none() | types), min_size=1, max_size=5)


@settings(max_examples=200)
@given(
    batch=events,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    bom=st.booleans(),
)
def test_any_chunking_gives_the_same_events(
    batch: list[tuple[str, str | None, str | None]], cuts: list[int], bom: bool
) -> None:
    stream = (b"\xef\xbb\xbf" if bom else b"") + b"".join(
        encode_event(d, id=i, event=e) for d, i, e in batch
    )
    whole = Decoder().feed(stream)
    decoder = Decoder()
    pieces: list[ServerEvent] = []
    start = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts):
        pieces += decoder.feed(stream[start:cut])
        start = cut
    pieces += decoder.feed(stream[start:])
    assert pieces == whole
    assert [e.data for e in whole] == [normalize_newlines(d) for d, _, _ in batch]
