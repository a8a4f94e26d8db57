"""HTTP/1.1 framing faults found by trying to break the hub: half-close, HEAD, pipelining
order, 100 Continue and token expiry, each over real sockets against `ssehub serve`."""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from ssehub import Event, Hub, MemoryBackend
from ssehub.client import subscribe
from ssehub.contract import InvalidEvent
from ssehub.sse import ServerEvent

from .support import HUB, HubProcess, make_token, next_chunk, start_hub

API = HUB + "/subscriptions"


@pytest.fixture(scope="module")
def full_hub() -> Iterator[HubProcess]:
    """Every route on: the demo page, the subscriptions API, /metrics, /healthz."""
    h = start_hub("--anonymous", "--demo", "--subscriptions", "--heartbeat", "0")
    yield h
    h.stop()


def unique(name: str) -> str:
    return f"https://example.com/{name}/{uuid.uuid4().hex[:8]}"


def publish_request(
    token: str, body: str, *, expect: bool = False, send_body: bool = True
) -> bytes:
    head = (
        f"POST {HUB} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body.encode())}\r\n"
        + ("Expect: 100-continue\r\n" if expect else "")
        + "\r\n"
    ).encode()
    return head + (body.encode() if send_body else b"")


class Wire:
    """One client connection that reads what the hub sends, with a deadline per wait."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.got = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until(self, done: bytes, count: int = 1, timeout: float = 10.0) -> bytes:
        """Read until ``done`` occurs ``count`` times (or the hub closes, or the deadline)."""
        deadline = time.monotonic() + timeout
        while self.got.count(done) < count and (chunk := next_chunk(self.sock, deadline)):
            self.got += chunk
        return self.got

    def until_closed(self, timeout: float = 10.0) -> bytes:
        """Read until the hub closes the connection cleanly (a reset may have lost bytes)."""
        deadline = time.monotonic() + timeout
        try:
            while chunk := next_chunk(self.sock, deadline):
                self.got += chunk
        except ConnectionResetError:
            chunk = None
        if chunk == b"":
            return self.got
        raise AssertionError(f"the hub did not close the connection; got {self.got!r}")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def statuses(raw: bytes) -> list[int]:
    """The status codes of every response head in ``raw``, in order."""
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


# -- half-close --------------------------------------------------------------------------------


def test_publish_then_half_close_is_answered(full_hub: HubProcess) -> None:
    topic = unique("halfclose")
    with full_hub.subscribe(topic) as sub, Wire(full_hub.port) as wire:
        # Corked, the request and the FIN leave together and reach the hub in one read.
        wire.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        wire.send(publish_request(full_hub.publisher_token, f"topic={topic}&data=x&id=hc1"))
        wire.sock.shutdown(socket.SHUT_WR)
        raw = wire.until_closed()
        assert raw.startswith(b"HTTP/1.1 200 ")
        assert raw.endswith(b"\r\n\r\nhc1")
        assert [e.id for e in sub.events(1)] == ["hc1"]


def test_pipelined_then_half_close_answers_every_request(full_hub: HubProcess) -> None:
    topic = unique("halfclose")
    token = full_hub.publisher_token
    with Wire(full_hub.port) as wire:
        wire.send(
            publish_request(token, f"topic={topic}&data=a&id=hp1")
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            + publish_request(token, f"topic={topic}&data=b&id=hp2")
        )
        wire.sock.shutdown(socket.SHUT_WR)
        raw = wire.until_closed()
        assert statuses(raw) == [200, 200, 200]
        assert raw.endswith(b"hp2")
        assert raw.index(b"hp1") < raw.index(b"ok\n") < raw.index(b"hp2")


# -- HEAD ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/healthz", "/readyz", "/metrics", "/", API, HUB, "/nope"],
)
def test_head_answers_carry_no_body(full_hub: HubProcess, path: str) -> None:
    """A HEAD answer has the GET's headers (with its Content-Length) and no body, so the
    next answer on the same keep-alive connection starts right after its head."""
    with Wire(full_hub.port) as wire:
        wire.send(
            f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        raw = wire.until_closed()
    first, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep
    assert b"\r\ncontent-length: " in first.lower()
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), rest[:80]
    assert rest.endswith(b"\r\n\r\nok\n")


# -- pipelining order -------------------------------------------------------------------------


def test_valid_request_before_a_refused_one_runs_and_is_answered_first(
    full_hub: HubProcess,
) -> None:
    topic = unique("pipe-refused")
    with full_hub.subscribe(topic) as sub, Wire(full_hub.port) as wire:
        wire.send(
            publish_request(full_hub.publisher_token, f"topic={topic}&data=x&id=pr1")
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            + b"\x00\xff garbage\r\n\r\n"
        )
        raw = wire.until_closed()
        assert statuses(raw) == [200, 200, 400]
        assert raw.index(b"pr1") < raw.index(b"ok\n") < raw.index(b"malformed")
        assert [e.id for e in sub.events(1)] == ["pr1"]


def test_valid_request_before_an_oversized_head_is_answered(full_hub: HubProcess) -> None:
    topic = unique("pipe-431")
    with Wire(full_hub.port) as wire:
        wire.send(
            publish_request(full_hub.publisher_token, f"topic={topic}&data=x&id=pb1")
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"a" * 20000
            + b"\r\n\r\n"
        )
        raw = wire.until_closed()
        assert statuses(raw) == [200, 431]
        assert raw.index(b"pb1") < raw.index(b"too large")


def test_100_continue_waits_for_the_earlier_answers(full_hub: HubProcess) -> None:
    topic = unique("continue")
    token = full_hub.publisher_token
    later = f"topic={topic}&data=y&id=c2"
    with Wire(full_hub.port) as wire:
        wire.send(
            publish_request(token, f"topic={topic}&data=x&id=c1")
            + publish_request(token, later, expect=True, send_body=False)
        )
        raw = wire.until(b"HTTP/1.1 ", count=2)
        assert statuses(raw) == [200, 100]
        assert raw.index(b"c1") < raw.index(b"HTTP/1.1 100 Continue")
        wire.send(later.encode())
        raw = wire.until(b"HTTP/1.1 ", count=3)
        assert statuses(raw) == [200, 100, 200]
        assert raw.endswith(b"c2")


def test_100_continue_comes_at_once_when_nothing_is_ahead(full_hub: HubProcess) -> None:
    topic = unique("continue")
    body = f"topic={topic}&data=y&id=c3"
    with Wire(full_hub.port) as wire:
        wire.send(publish_request(full_hub.publisher_token, body, expect=True, send_body=False))
        assert statuses(wire.until(b"\r\n\r\n")) == [100]
        wire.send(body.encode())
        raw = wire.until(b"c3")
        assert statuses(raw) == [100, 200]


# -- token expiry and leeway ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenient_hub() -> Iterator[HubProcess]:
    h = start_hub("--no-demo", "--heartbeat", "0", "--jwt-leeway", "60")
    yield h
    h.stop()


def test_token_within_leeway_gets_its_stream(lenient_hub: HubProcess) -> None:
    topic = unique("leeway")
    token = make_token(subscribe=["*"], exp=time.time() - 5)
    with lenient_hub.subscribe(topic, token=token) as sub:
        assert sub.status == 200
        sent = lenient_hub.publish(topic, "within the leeway").text
        assert [e.id for e in sub.events(1)] == [sent]


def test_token_past_its_leeway_is_refused(lenient_hub: HubProcess) -> None:
    token = make_token(subscribe=["*"], exp=time.time() - 120)
    with lenient_hub.subscribe(unique("leeway"), token=token) as sub:
        assert sub.status == 401
        assert b"expired" in sub.body


# -- ids a client could not send back -----------------------------------------------------------


@pytest.mark.parametrize(
    ("event_id", "word"),
    [
        (" leading", "space"),
        ("trailing ", "space"),
        ("   ", "space"),
        ("tab\there", "control"),
        ("cr\rhere", "control"),
        ("nul\x00here", "control"),
        ("x" * 1025, "longer than 1024 bytes"),
    ],
)
def test_ids_no_client_can_resume_from_are_refused(
    full_hub: HubProcess, event_id: str, word: str
) -> None:
    topic = unique("badid")
    with full_hub.subscribe(topic) as sub:
        r = full_hub.publish(topic, "x", id=event_id)
        assert r.status_code == 400, r.text
        assert word in r.text
        # The refused event never reaches the stream: the next one there is the marker.
        marker = full_hub.publish(topic, "marker")
        assert marker.status_code == 200, marker.text
        [got] = sub.events(1)
        assert got.data == "marker"


def test_ids_with_inner_spaces_and_unicode_resume(full_hub: HubProcess) -> None:
    topic = unique("goodid")
    first = full_hub.publish(topic, "a", id=f"inner space {uuid.uuid4().hex[:6]} é").text
    second = full_hub.publish(topic, "b").text
    with full_hub.subscribe(topic, last_event_id=first) as resumed:
        # SSEClient reads the head as latin-1; the hub writes ids in UTF-8.
        assert resumed.headers["last-event-id"].encode("latin-1").decode() == first
        assert [e.id for e in resumed.events(1)] == [second]


@pytest.mark.parametrize(
    "bad",
    [
        Event(("urn:t",), "bad", id="a\nb"),
        Event(("urn:t",), "bad", id=" padded"),
        Event(("urn:t",), "bad", type="a\rb"),
        Event(("urn:t",), "bad", retry=-1),
    ],
)
def test_in_process_publish_of_a_bad_event_fails_alone(bad: Event) -> None:
    """Hub.publish (the Python API, which skips the HTTP form parser) refuses a bad event at
    once; before, it joined the backend's batch and failed the good events beside it."""

    async def go() -> None:
        hub = Hub(MemoryBackend(), heartbeat=0)
        await hub.start()
        try:
            good = hub.publish(Event(("urn:t",), "good", id="ok-1"))
            with pytest.raises(InvalidEvent, match="bad"):
                hub.publish(bad)  # refused at once, before it joins a batch
            assert (await good).id == "ok-1"
        finally:
            await hub.close()

    asyncio.run(go())


# -- framing headers ------------------------------------------------------------------------------


def test_no_content_answer_has_no_content_length() -> None:
    """RFC 9110 8.6: a server must not send Content-Length in a 204 (the CORS preflight)."""
    h = start_hub("--no-demo", "--heartbeat", "0", "--cors-origins", "https://app.example")
    try:
        with Wire(h.port) as wire:
            wire.send(
                f"OPTIONS {HUB} HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n"
                "Access-Control-Request-Method: POST\r\n\r\n"
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            raw = wire.until_closed()
        first, _, rest = raw.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 204 ")
        assert b"content-length" not in first.lower()
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        h.stop()


SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        b"Content-Length: 5\r\nContent-Length: 40\r\n\r\nhello" + SMUGGLED,
        b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
        b"Content-Length: -1\r\n\r\n" + SMUGGLED,
        b"X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n" + SMUGGLED,
    ],
    ids=["cl-and-te", "two-lengths", "te-list", "negative-length", "obs-fold"],
)
def test_ambiguous_framing_is_refused_after_the_valid_request(
    full_hub: HubProcess, framing: bytes
) -> None:
    """Request smuggling: a request whose length is ambiguous is a 400 and ends the
    connection, so nothing after it is read as a request; what came before is answered."""
    topic = unique("smuggle")
    with Wire(full_hub.port) as wire:
        wire.send(
            publish_request(full_hub.publisher_token, f"topic={topic}&data=x&id=sm1")
            + f"POST {HUB} HTTP/1.1\r\nHost: x\r\n".encode()
            + framing
        )
        raw = wire.until_closed()
    assert statuses(raw) == [200, 400]
    assert b"ok\n" not in raw


def test_no_100_continue_to_an_http_1_0_client(full_hub: HubProcess) -> None:
    """RFC 9110 10.1.1: a server must not send 100 Continue to an HTTP/1.0 client."""
    topic = unique("continue10")
    body = f"topic={topic}&data=x&id=c10"
    request = publish_request(full_hub.publisher_token, body, expect=True)
    with Wire(full_hub.port) as wire:
        wire.send(request.replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1))
        raw = wire.until_closed()
    assert statuses(raw) == [200]
    assert raw.startswith(b"HTTP/1.1 200 ")


def test_client_resumes_from_a_non_ascii_id(full_hub: HubProcess) -> None:
    """The hub takes UTF-8 ids and finds them from a UTF-8 Last-Event-ID (as browsers send
    it); ssehub.client must be able to send one back too."""
    topic = unique("client-utf8")
    first = full_hub.publish(topic, "a", id=f"café-{uuid.uuid4().hex[:6]}").text
    second = full_hub.publish(topic, "b").text

    async def go() -> list[str]:
        got: list[str] = []
        async with asyncio.timeout(10):
            async for item in subscribe(full_hub.url, topic, last_event_id=first):
                assert isinstance(item, ServerEvent), item
                got.append(item.id)
                break
        return got

    assert asyncio.run(go()) == [second]
