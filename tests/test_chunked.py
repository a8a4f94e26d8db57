"""HTTP/1.1 streams are chunked (a cut stream never looks like a clean end); HTTP/1.0 ones
stay close-delimited. Every byte of a chunked stream goes through ``Dechunker``, which
raises on bad framing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from .support import HubProcess, SSEClient, make_token, start_hub


@pytest.fixture(scope="module")
def hub() -> Iterator[HubProcess]:
    h = start_hub("--heartbeat", "0.2", "--retry", "1500")
    yield h
    h.stop()


def read_until(sub: SSEClient, done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Read (decoding) until ``done()`` is true or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not met in time"
        sub.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sub.sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            sub.closed = True
            return
        sub._feed(data)


def test_http11_stream_is_chunked_through_replay_live_and_heartbeats(hub: HubProcess) -> None:
    token = make_token(subscribe=["*"])
    topic = "https://example.com/chunked/1"
    first = hub.publish(topic, "before").text
    with hub.subscribe(topic, token=token, last_event_id="earliest") as sub:
        assert sub.status == 200
        assert sub.headers["transfer-encoding"] == "chunked"
        assert sub.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "content-length" not in sub.headers
        assert sub.dechunker is not None
        (replayed,) = sub.events(1)  # the replay, framed
        assert (replayed.id, replayed.data) == (first, "before")
        assert sub.decoder.retry == 1500  # the preamble, framed
        hub.publish(topic, "live")
        assert [e.data for e in sub.events(1)] == ["live"]
        comments = sub.decoder.comments_seen
        read_until(sub, lambda: sub.decoder.comments_seen >= comments + 2)  # heartbeats
        assert not sub.dechunker.ended


def test_http10_stream_stays_close_delimited(hub: HubProcess) -> None:
    token = make_token(subscribe=["*"])
    topic = "https://example.com/chunked/10"
    with (
        hub.subscribe(topic, token=token, version="HTTP/1.0") as old,
        hub.subscribe(topic, token=token) as new,
    ):
        assert "transfer-encoding" not in old.headers
        assert old.dechunker is None
        assert new.headers["transfer-encoding"] == "chunked"
        # Same selectors and claims, different framing: each gets its own bytes.
        hub.publish(topic, "both")
        assert [e.data for e in old.events(1)] == ["both"]
        assert [e.data for e in new.events(1)] == ["both"]


def test_drain_ends_chunked_stream_with_last_chunk() -> None:
    h = start_hub()
    try:
        token = make_token(subscribe=["*"])
        topic = "https://example.com/chunked/drain"
        with (
            h.subscribe(topic, token=token) as sub,
            h.subscribe(topic, token=token, version="HTTP/1.0") as old,
        ):
            h.publish(topic, "one")
            assert [e.data for e in sub.events(1)] == ["one"]
            assert [e.data for e in old.events(1)] == ["one"]
            h.stop()  # SIGTERM: the drain ends every stream cleanly
            assert sub.wait_closed()
            assert sub.dechunker is not None
            assert sub.dechunker.ended  # "0\r\n\r\n": a clean end, not a cut
            assert sub.dechunker.buffer == b"\r\n"  # nothing after the terminating chunk
            assert old.wait_closed()  # HTTP/1.0: the close is the end
    finally:
        h.stop()


def test_write_timeout_ends_chunked_stream_with_last_chunk() -> None:
    h = start_hub("--write-timeout", "1")
    try:
        with h.subscribe("https://example.com/chunked/t", token=make_token(subscribe=["*"])) as sub:
            assert sub.wait_closed()
            assert sub.dechunker is not None and sub.dechunker.ended
    finally:
        h.stop()
