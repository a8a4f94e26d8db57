"""The server's HTTP/1.1 connection protocol in process, over a fake transport.

Pipelining, keep-alive, refusals, flow control, streams and connection limits, with no socket
and no subprocess (see protocol_harness). Behaviour that needs a real network (kernel buffers,
slow readers, signals) is tested over real sockets in test_http_hub and test_security.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, cast

import pytest

from ssehub.app import App, DeferredPublish
from ssehub.errors import field_value
from ssehub.events import Event
from ssehub.server.http import head
from ssehub.settings import Settings

from .backends import failing, intercept_since
from .protocol_harness import (
    PUBLISHER,
    Connection,
    close_server,
    make_protocol,
    publish,
    request,
    shut_down,
    subscribe,
    sweep,
)
from .support import HUB, KEY, until

P = ParamSpec("P")


def in_loop(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test in a fresh event loop of its own."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def hub_settings(**changes: Any) -> Settings:
    base: dict[str, Any] = {
        "publisher_jwt_key": KEY,
        "subscriber_jwt_key": KEY,
        "heartbeat": 0,
        "demo": False,
    }
    return Settings(**{**base, **changes})


def one_line(body: bytes) -> str:
    """A refusal's body: exactly one line, returned without its newline."""
    assert body.endswith(b"\n") and body.count(b"\n") == 1, body
    return body.decode().rstrip("\n")


async def live_subscriber(server: object, *topics: str) -> Connection:
    """A subscriber on ``server``: registered once its head and first comment are written."""
    sub = await make_protocol(server=server)
    sub.send(subscribe(*topics))
    await first_comment(sub)
    return sub


async def first_comment(sub: Connection) -> None:
    """Wait for a stream's head and first comment (written once it is registered)."""
    await until(lambda: sub.stream_head() is not None, "the stream's head")

    def seen() -> bool:
        assert sub.events() == []  # no event before the first comment
        return sub.decoder.comments_seen >= 1

    await until(seen, "the first comment")


async def marker(conn: Connection, topic: str) -> str:
    """Publish a marker in process; a subscriber's next event must be this one."""
    return (await conn.hub.publish(Event((topic,), "marker"))).id


HEALTH = request("GET", "/healthz")
FORM = {
    "Authorization": f"Bearer {PUBLISHER}",
    "Content-Type": "application/x-www-form-urlencoded",
}


# -- pipelining and keep-alive ---------------------------------------------------------------


@pytest.mark.parametrize("chunk", [0, 1, 7, 100], ids=["one-packet", "1", "7", "100"])
@in_loop
async def test_pipelined_publishes_are_answered_in_order(chunk: int) -> None:
    conn = await make_protocol(hub_settings())
    sub = await live_subscriber(conn.server, "t")
    data = b"".join(
        [
            publish("t", "a", id="p1"),
            request("POST", HUB, FORM, b"data=no-topic"),
            publish("t", "b", id="p2"),
            publish("t", "c", id="p3", close=True),
        ]
    )
    step = chunk or len(data)
    for i in range(0, len(data), step):
        conn.send(data[i : i + step])
    answers = await conn.answers(4)
    assert [(status, body) for status, _, body in answers] == [
        (200, b"p1"),
        (400, b"missing topic: a publish needs at least one topic field\n"),
        (200, b"p2"),
        (200, b"p3"),
    ]
    assert [h["connection"] for _, h, _ in answers] == ["keep-alive"] * 3 + ["close"]
    await until(lambda: conn.transport.lost, "the connection to close")
    assert conn.transport.after_close == []
    assert [e.id for e in await sub.next_events(3)] == ["p1", "p2", "p3"]
    await close_server(conn)


@in_loop
async def test_a_stream_behind_an_answer_ready_at_once_starts() -> None:
    """A subscribe pipelined behind a request answered at once (not a publish) waited for a
    callback that no answer would make: neither the answer nor the stream ever came."""
    conn = await make_protocol(hub_settings())
    conn.send(HEALTH + subscribe("t"))
    await until(lambda: conn.hub.subscriber_count == 1, "the stream to start")
    health, stream = bytes(conn.transport.buffer).split(b"HTTP/1.1 ", 2)[1:]
    assert health.startswith(b"200 OK\r\n") and health.endswith(b"\r\n\r\nok\n")
    assert stream.startswith(b"200 OK\r\n") and b"text/event-stream" in stream
    await close_server(conn)


@in_loop
async def test_a_pipeline_of_publishes_wakes_once_per_answer_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Answers leave in order, so only the first one not ready has a callback: 64 pipelined
    publishes stored in one batch are written in one go, not woken 64 times."""
    conn = await make_protocol(hub_settings())
    woken = 0
    when_done = DeferredPublish.when_done

    def counted(self: DeferredPublish, callback: Callable[[], None]) -> None:
        nonlocal woken
        woken += 1
        when_done(self, callback)

    monkeypatch.setattr(DeferredPublish, "when_done", counted)
    conn.send(b"".join(publish("t", str(i), id=f"p{i}") for i in range(64)))
    answers = await conn.answers(64)
    assert [body for _, _, body in answers] == [f"p{i}".encode() for i in range(64)]
    assert woken == 1
    await close_server(conn)


@pytest.mark.parametrize("chunk", [0, 100], ids=["one-packet", "100"])
@in_loop
async def test_requests_after_a_close_request_are_ignored(chunk: int) -> None:
    conn = await make_protocol(hub_settings())
    sub = await live_subscriber(conn.server, "t")
    data = publish("t", "c", id="p1", close=True) + publish("t", "after close", id="p2")
    step = chunk or len(data)
    for i in range(0, len(data), step):
        conn.send(data[i : i + step])
    await until(lambda: conn.transport.eof_written or conn.transport.closed, "the end")
    [(status, headers, body)] = conn.responses()
    assert (status, headers["connection"], body) == (200, "close", b"p1")
    last = await marker(conn, "t")
    assert [e.id for e in await sub.next_events(2)] == ["p1", last]  # p2 was never read
    await close_server(conn)


@pytest.mark.parametrize(
    ("version", "headers", "keep_alive"),
    [
        ("1.1", {}, True),
        ("1.1", {"Connection": "close"}, False),
        ("1.0", {}, False),
        ("1.0", {"Connection": "keep-alive"}, True),
    ],
)
@in_loop
async def test_keep_alive_or_close(version: str, headers: dict[str, str], keep_alive: bool) -> None:
    conn = await make_protocol(hub_settings())
    conn.send(request("GET", "/healthz", headers, version=version))
    [(status, answer_headers, body)] = await conn.answers(1)
    assert (status, body) == (200, b"ok\n")
    assert answer_headers["connection"] == ("keep-alive" if keep_alive else "close")
    if keep_alive:
        conn.send(HEALTH)
        assert len(await conn.answers(2)) == 2
        assert not conn.transport.closed
    else:
        await until(lambda: conn.transport.lost, "the connection to close")
    await close_server(conn)


# -- refusals --------------------------------------------------------------------------------

LIMITS = {"max_head_size": 1024, "max_url_length": 512, "max_body_size": 256}
POST_HEAD = f"POST {HUB} HTTP/1.1\r\nHost: hub.test\r\nAuthorization: Bearer {PUBLISHER}\r\n"


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n",
            431,
            "request head too large",
            id="431-header",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\n" + b"X-N: v\r\n" * 200 + b"\r\n",
            431,
            "request head too large",
            id="431-many-headers",
        ),
        pytest.param(
            b"GET /" + b"a" * 600 + b" HTTP/1.1\r\n\r\n",
            414,
            "URL longer than 512 bytes",
            id="414",
        ),
        pytest.param(
            POST_HEAD.encode() + b"Content-Length: 1000\r\n\r\n",
            413,
            "body larger than 256 bytes",
            id="413-declared",
        ),
        pytest.param(
            POST_HEAD.encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"12c\r\n"
            + b"x" * 300
            + b"\r\n",
            413,
            "body larger than 256 bytes",
            id="413-chunked",
        ),
        pytest.param(
            b"\x00\xff garbage\r\n\r\n",
            400,
            "malformed HTTP request: Invalid method encountered",
            id="400-garbage",
        ),
        pytest.param(
            POST_HEAD.encode() + b"Content-Length: abc\r\n\r\n",
            400,
            "malformed HTTP request",
            id="400-content-length",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            400,
            "protocol upgrades are not supported",
            id="400-upgrade",
        ),
    ],
)
@in_loop
async def test_refusals_answer_once_with_one_line_and_close(
    data: bytes, status: int, reason: str
) -> None:
    conn = await make_protocol(hub_settings(**LIMITS))
    control = await live_subscriber(conn.server, "control")
    conn.send(data)
    [(got, headers, body)] = conn.responses()
    assert got == status
    assert one_line(body).startswith(reason)
    assert headers["connection"] == "close"
    # The answer goes out before the close: EOF first, so no reset can overtake it.
    assert conn.transport.eof_written
    conn.send(HEALTH)  # framing is lost: nothing after a refusal is read
    assert len(conn.responses()) == 1
    probe = await marker(conn, "control")
    assert [e.id for e in await control.next_events(1)] == [probe]
    await close_server(conn)


@in_loop
async def test_an_endless_header_line_is_refused() -> None:
    """httptools keeps a header line until it ends, so the hub counts the raw bytes of an
    unfinished head too (sent piece by piece, as a slow client would)."""
    conn = await make_protocol(hub_settings(**LIMITS))
    conn.send(b"GET /healthz HTTP/1.1\r\nX-Endless: ")
    for _ in range(10):
        conn.send(b"a" * 200)
    [(status, _, body)] = conn.responses()
    assert (status, one_line(body)) == (431, "request head too large")
    assert conn.transport.eof_written
    await close_server(conn)


BEFORE_A_HEAD = {  # requests that may share a packet with the start of the next head
    "nothing": b"",
    "a-get": HEALTH,
    "a-body-with-blank-lines": request("POST", "/healthz", body=b"a\r\n\r\nb\r\n\r\n"),
    "a-chunked-body": (
        b"POST /healthz HTTP/1.1\r\nHost: hub.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nab\r\n\r\n0\r\n\r\n"
    ),
}
UNFINISHED = b"GET /healthz HTTP/1.1\r\nHost: hub.test\r\nX-Long: "


@pytest.mark.parametrize("before", BEFORE_A_HEAD.values(), ids=BEFORE_A_HEAD.keys())
@in_loop
async def test_an_unfinished_head_counts_from_its_first_packet(before: bytes) -> None:
    """The packet an unfinished head starts in counts too, however much of it belongs to
    earlier requests: one byte past --max-head-size is refused at once."""
    limit = LIMITS["max_head_size"]
    conn = await make_protocol(hub_settings(**LIMITS))
    conn.send(before + UNFINISHED + b"a" * (limit + 1 - len(UNFINISHED)))
    answers = conn.responses()
    assert [status for status, _, _ in answers][-1:] == [431]
    assert one_line(answers[-1][2]) == "request head too large"
    await close_server(conn)


@pytest.mark.parametrize("before", BEFORE_A_HEAD.values(), ids=BEFORE_A_HEAD.keys())
@pytest.mark.parametrize("cut", [0, 1, 2, 3], ids=["whole-blank-line", "cr", "crlf", "crlfcr"])
@in_loop
async def test_an_unfinished_head_of_exactly_the_limit_is_read(before: bytes, cut: int) -> None:
    """Only the head's own bytes count: not those of the requests before it in its first
    packet, nor the end of their blank line when that came a packet earlier."""
    limit = LIMITS["max_head_size"]
    conn = await make_protocol(hub_settings(**LIMITS))
    blank = len(before) - 4 + cut if before.endswith(b"\r\n\r\n") and cut else len(before)
    conn.send(before[:blank])
    conn.send(before[blank:] + UNFINISHED)
    conn.send(b"a" * (limit - len(UNFINISHED)))  # unfinished, exactly --max-head-size bytes
    conn.send(b"\r\n\r\n")
    answers = await conn.answers(2 if before else 1)
    assert answers[-1][0] == 200
    await close_server(conn)


@in_loop
async def test_refusal_after_valid_requests_in_the_same_packet_answers_them_first() -> None:
    conn = await make_protocol(hub_settings())
    sub = await live_subscriber(conn.server, "t")
    conn.send(publish("t", "a", id="p1") + HEALTH + b"\x00garbage\r\n\r\n")
    await until(lambda: conn.transport.eof_written or conn.transport.closed, "the refusal")
    answers = conn.responses()
    assert [(status, body[:2]) for status, _, body in answers] == [
        (200, b"p1"),
        (200, b"ok"),
        (400, b"ma"),
    ]
    assert [e.id for e in await sub.next_events(1)] == ["p1"]
    await close_server(conn)


@in_loop
async def test_refusal_waits_for_the_answer_of_a_publish_in_flight() -> None:
    conn = await make_protocol(hub_settings())
    conn.send(publish("t", "a", id="p1"))  # its answer waits for the backend
    conn.send(b"\x00garbage\r\n\r\n")
    answers = await conn.answers(2)
    assert [status for status, _, _ in answers] == [200, 400]
    assert answers[0][2] == b"p1"
    assert one_line(answers[1][2]).startswith("malformed HTTP request")
    await until(lambda: conn.transport.lost, "the connection to close")
    await close_server(conn)


@pytest.mark.parametrize(
    ("method", "path", "status", "allow", "reason"),
    [
        ("PUT", HUB, 405, "GET, POST, OPTIONS", "PUT not allowed here"),
        ("DELETE", HUB, 405, "GET, POST, OPTIONS", "DELETE not allowed here"),
        ("OPTIONS", HUB, 405, "GET, POST, OPTIONS", "OPTIONS is only for CORS preflight"),
        ("POST", "/metrics", 405, "GET, HEAD", "POST not allowed on /metrics"),
        ("POST", "/healthz", 405, "GET, HEAD", "POST not allowed on /healthz"),
        ("GET", "/", 404, None, "no such path '/'"),  # the demo is off
        ("GET", "/nope", 404, None, f"no such path '/nope': the hub is at {HUB}"),
        ("GET", HUB, 400, None, "missing topic: subscribe with at least one topic"),
        ("POST", HUB, 415, None, "publish with Content-Type: application/x-www-form-urlencoded"),
    ],
)
@in_loop
async def test_wrong_method_or_path(
    method: str, path: str, status: int, allow: str | None, reason: str
) -> None:
    conn = await make_protocol(hub_settings())
    conn.send(request(method, path))
    conn.send(HEALTH)  # the connection stays usable after a refused request
    [(got, headers, body), (after, _, _)] = await conn.answers(2)
    assert (got, after) == (status, 200)
    assert headers.get("allow") == allow
    assert reason in one_line(body)
    assert headers["connection"] == "keep-alive"
    await close_server(conn)


@in_loop
async def test_expect_100_continue() -> None:
    conn = await make_protocol(hub_settings(max_body_size=256))
    body = b"topic=t&data=x&id=e1"
    head = (
        POST_HEAD + "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    conn.send(head)
    assert bytes(conn.transport.buffer) == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(body)
    [(interim, _, _), (status, _, answer)] = await conn.answers(2)
    assert (interim, status, answer) == (100, 200, b"e1")

    # Too large a body is refused at once, without inviting the client to send it.
    big = await make_protocol(server=conn.server)
    big.send(POST_HEAD.encode() + b"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
    [(status, _, reason)] = big.responses()
    assert status == 413
    assert b"100 Continue" not in big.transport.buffer
    assert one_line(reason) == "body larger than 256 bytes"
    await close_server(conn)


# -- connection limits -----------------------------------------------------------------------


@in_loop
async def test_connections_in_total_and_per_address() -> None:
    first = await make_protocol(hub_settings(max_connections=3, max_connections_per_ip=2))
    server = first.server
    second = await make_protocol(server=server)
    third = await make_protocol(server=server)  # same address: one too many
    assert third.transport.eof_written
    [(status, headers, body)] = third.responses()
    assert (status, headers["retry-after"]) == (429, "1")
    assert one_line(body) == "too many connections from 127.0.0.1 (at most 2)"
    other = await make_protocol(server=server, peer=("10.0.0.2", 50000))
    assert other.responses() == []  # another address is still welcome
    fourth = await make_protocol(server=server, peer=("10.0.0.3", 50000))
    [(status, headers, body)] = fourth.responses()  # but the hub is full
    assert (status, headers["retry-after"]) == (503, "1")
    assert one_line(body) == "too many connections to this hub; try again soon"

    second.transport.peer_closes()  # a slot frees up, for this address too
    again = await make_protocol(server=server)
    again.send(HEALTH)
    [(status, _, _)] = await again.answers(1)
    assert status == 200
    await close_server(first)


@in_loop
async def test_a_flood_of_refused_connections_holds_a_bounded_number_open() -> None:
    """A refusal lingers so no reset overtakes its answer, but refusals are not counted as
    connections: past a tenth of --max-connections lingering, they close at once."""
    first = await make_protocol(hub_settings(max_connections=20, max_connections_per_ip=0))
    held = [first] + [await make_protocol(server=first.server) for _ in range(19)]
    refused = [
        await make_protocol(server=first.server, peer=(f"10.0.1.{i}", 50000)) for i in range(50)
    ]
    for conn in refused:
        [(status, _, _)] = conn.responses()  # every refusal is answered
        assert status == 503
    assert sum(not conn.transport.closed for conn in refused) == 2  # 20 // 10 linger
    for conn in refused[:2]:
        conn.transport.peer_closes()  # lingering ones leave: two more may linger
    later = [await make_protocol(server=first.server, peer=("10.0.2.1", 1)) for _ in range(3)]
    assert [not conn.transport.closed for conn in later] == [True, True, False]
    assert not any(conn.transport.closed for conn in held)
    await close_server(first)


# -- time limits -----------------------------------------------------------------------------


@in_loop
async def test_write_timeout_counts_from_the_live_stream_not_a_slow_history() -> None:
    """A history slower than --write-timeout does not end the stream before its head: the
    deadline starts once the stream is live."""
    conn = await make_protocol(hub_settings(write_timeout=5, dispatch_timeout=0))
    first = await marker(conn, "t")
    reading, release = asyncio.Event(), asyncio.Event()

    async def slow(_: int) -> None:
        reading.set()
        await release.wait()

    intercept_since(conn.hub.backend, slow)
    sub = await make_protocol(server=conn.server)
    sub.send(subscribe("t", last_event_id="earliest"))
    await until(reading.is_set, "history being read")
    later = asyncio.get_running_loop().time() + 60
    sweep(conn, later)  # long past the deadline, had it started with the request
    assert not sub.transport.closed
    release.set()
    await until(lambda: sub.stream_head() is not None, "the stream's head")
    assert [e.id for e in await sub.next_events(1)] == [first]

    def ended_once_live() -> bool:  # the deadline holds for the live stream
        sweep(conn, asyncio.get_running_loop().time() + 60)
        return sub.transport.lost

    await until(ended_once_live, "the write timeout to end the live stream")
    await close_server(conn)


# -- faults of the hub's own ----------------------------------------------------------------


@pytest.mark.parametrize("failing_read", [1, 2], ids=["before-the-head", "after-the-head"])
@in_loop
async def test_a_stream_that_fails_to_start_is_answered_or_closed(
    failing_read: int, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error while a stream starts (here: reading history) is logged with its
    traceback and answered 500 if nothing went out yet, else the stream is closed: never a
    client left waiting."""
    conn = await make_protocol(hub_settings())
    for _ in range(100):  # two replay pages: the second read comes after the head
        await conn.hub.publish(Event(("t",), "x" * 2000))
    intercept_since(conn.hub.backend, failing(failing_read))
    conn.send(subscribe("t", last_event_id="earliest"))
    await until(lambda: conn.transport.lost, "the connection to close")
    status, _ = conn.stream_head() or (0, {})
    if failing_read == 1:
        [(status, headers, body)] = conn.responses()
        assert (status, headers["connection"]) == (500, "close")
        assert one_line(body) == "the hub failed to open this stream; its log says why"
    else:
        assert status == 200
        assert 0 < len(conn.events()) < 100
    assert "a stream failed to start" in caplog.text and "RuntimeError: boom" in caplog.text
    assert conn.hub.subscriber_count == 0
    await close_server(conn)


@in_loop
async def test_a_stream_without_last_event_id_is_live_within_the_read_that_asked() -> None:
    """Nothing to replay: the head is written and the subscriber is live before
    ``data_received`` returns, with no task (a connect storm of 19,500 made as many). One
    with a Last-Event-ID still replays in a task first."""
    conn = await make_protocol(hub_settings())
    await conn.hub.publish(Event(("t",), "before"))
    subs = [await make_protocol(server=conn.server) for _ in range(3)]
    tasks = len(asyncio.all_tasks())
    for sub in subs:
        sub.send(subscribe("t"))
        assert (sub.stream_head() or (0, {}))[0] == 200  # already, in the same call
    assert conn.hub.subscriber_count == 3 and len(asyncio.all_tasks()) == tasks
    resumed = await make_protocol(server=conn.server)
    resumed.send(subscribe("t", last_event_id="earliest"))
    assert resumed.stream_head() is None
    await until(lambda: resumed.stream_head() is not None, "the replayed stream's head")
    last = await marker(conn, "t")
    for sub in subs:
        assert [e.id for e in await sub.next_events(1)] == [last]
    assert [e.data for e in await resumed.next_events(2)] == ["before", "marker"]
    await close_server(conn)


@in_loop
async def test_a_stream_that_fails_to_start_at_once_is_answered_500(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The synchronous start's fault path: logged with its traceback, answered, forgotten."""
    conn = await make_protocol(hub_settings())

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(conn.hub, "subscribe_now", broken)
    conn.send(subscribe("t"))
    await until(lambda: conn.transport.lost, "the connection to close")
    [(status, headers, body)] = conn.responses()
    assert (status, headers["connection"]) == (500, "close")
    assert one_line(body) == "the hub failed to open this stream; its log says why"
    assert "a stream failed to start" in caplog.text and "RuntimeError: boom" in caplog.text
    await close_server(conn)


@in_loop
async def test_a_request_the_hub_fails_to_answer_gets_a_500_and_the_next_is_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fault of the hub's own while answering (here: rendering /metrics) is a 500 with one
    line and a logged traceback; it used to escape into the transport, losing the answers
    pipelined after it."""
    conn = await make_protocol(hub_settings())
    app, _ = cast(tuple[App, object], conn.server)

    def broken() -> bytes:
        raise RuntimeError("boom")

    app.metrics.render = broken  # type: ignore[method-assign]
    conn.send(request("GET", "/metrics") + HEALTH)
    [(status, headers, body), (after, _, _)] = await conn.answers(2)
    assert (status, headers["connection"], after) == (500, "keep-alive", 200)
    assert one_line(body) == "the hub failed to answer this request; its log says why"
    assert "answering GET /metrics failed" in caplog.text and "RuntimeError: boom" in caplog.text
    await close_server(conn)


# -- shutdown --------------------------------------------------------------------------------


@in_loop
async def test_shutdown_answers_the_requests_queued_behind_a_stream() -> None:
    """A subscribe waits for the publish before it to be answered; a shutdown meanwhile
    answers the publish, then the subscribe and what came after it with a 503."""
    conn = await make_protocol(hub_settings())
    conn.send(publish("t", "a", id="p1") + subscribe("t") + HEALTH + request("HEAD", "/healthz"))
    await shut_down(conn)  # the publish is still in flight
    answers = conn.responses()
    assert [(status, headers["connection"]) for status, headers, _ in answers] == [
        (200, "keep-alive"),
        (503, "keep-alive"),
        (503, "keep-alive"),
        (503, "close"),
    ]
    assert answers[0][2] == b"p1"
    assert one_line(answers[1][2]) == "the hub is shutting down; try again soon"
    assert answers[1][1]["retry-after"] == "1"
    assert bytes(conn.transport.buffer).endswith(b"\r\n\r\n")  # the HEAD's has no body
    assert conn.transport.lost


# -- flow control ----------------------------------------------------------------------------


@in_loop
async def test_publisher_that_stops_reading_answers_is_not_read_either() -> None:
    conn = await make_protocol(hub_settings())
    conn.transport.stall()
    count = 500  # answers past the transport's 64 KiB high-water mark
    conn.send(b"".join(publish("t", "x", id=f"e{i}") for i in range(count)))
    await conn.answers(count)
    assert conn.transport.writing_paused
    assert conn.transport.reading_paused  # paused by pause_writing: the client is not reading
    conn.send(publish("t", "later", id="later"))
    assert conn.transport.unread  # held back while reading is paused
    conn.transport.peer_reads()  # the client reads its answers: resume_writing
    answers = await conn.answers(count + 1)
    assert answers[-1][2] == b"later"
    assert not conn.transport.reading_paused
    await close_server(conn)


@in_loop
async def test_client_that_reads_no_answers_cannot_grow_the_write_buffer() -> None:
    # Read pauses are kept by reason (server/flow.py): the pipelining bound's resume no
    # longer undoes the pause of pause_writing.
    conn = await make_protocol(hub_settings())
    conn.transport.stall()
    for _ in range(5):  # each packet: past the pipelining bound and the 64 KiB high-water mark
        conn.send(HEALTH * 600)
    assert conn.transport.writing_paused
    assert conn.transport.reading_paused
    assert len(conn.transport.unread) == 4  # only the first packet was read
    conn.transport.peer_reads()
    await until(lambda: conn.transport.buffer.count(b"HTTP/1.1 200 ") >= 3000, "every answer")
    await close_server(conn)


@in_loop
async def test_pipelining_past_the_bound_pauses_reading_until_answered() -> None:
    conn = await make_protocol(hub_settings(max_pipelined=4))
    conn.send(b"".join(publish("t", "x", id=f"e{i}") for i in range(10)))
    assert conn.transport.reading_calls[:1] == ["pause"]  # the queue reached its bound
    answers = await conn.answers(10)
    assert [body for _, _, body in answers] == [f"e{i}".encode() for i in range(10)]
    assert not conn.transport.reading_paused
    await close_server(conn)


@in_loop
async def test_live_subscriber_that_stops_reading_is_dropped() -> None:
    conn = await make_protocol(hub_settings(max_write_buffer=4096))
    slow = await live_subscriber(conn.server, "t")
    fast = await live_subscriber(conn.server, "t")
    slow.transport.stall()
    ids = [(await conn.hub.publish(Event(("t",), "x" * 1000))).id for _ in range(8)]
    await until(lambda: slow.transport.lost, "the slow subscriber to be dropped")
    assert slow.transport.aborted  # unsent bytes and all: it resumes with Last-Event-ID
    assert conn.hub.slow_dropped == 1
    assert conn.hub.subscriber_count == 1
    assert [e.id for e in await fast.next_events(8)] == ids  # the other one never noticed
    await close_server(conn)


@in_loop
async def test_replaying_subscriber_is_paused_not_dropped() -> None:
    conn = await make_protocol(hub_settings(max_write_buffer=64 * 1024))
    ids = [(await conn.hub.publish(Event(("t",), "x" * 1000))).id for _ in range(400)]
    sub = await make_protocol(server=conn.server)
    sub.transport.stall()
    sub.send(subscribe("t", last_event_id="earliest"))
    await until(lambda: sub.transport.writing_paused, "the replay to fill the buffer")
    assert not sub.transport.aborted  # a replay past the live bound waits, it is not dropped
    during = (await conn.hub.publish(Event(("t",), "during"))).id
    sub.transport.peer_reads()
    got = await sub.next_events(401)
    assert [e.id for e in got] == [*ids, during]
    assert not sub.transport.closed
    await close_server(conn)


# -- streams ---------------------------------------------------------------------------------


@in_loop
async def test_stream_head_preamble_and_live_delivery() -> None:
    conn = await make_protocol(hub_settings(retry=1234))
    sub = await make_protocol(server=conn.server)
    sub.send(subscribe("https://example.com/books/{id}"))
    await first_comment(sub)
    head = sub.stream_head()
    assert head is not None
    status, headers = head
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["transfer-encoding"] == "chunked"  # a cut stream is not a clean end
    assert headers["connection"] == "close"
    assert "content-length" not in headers
    assert headers["x-accel-buffering"] == "no"
    assert "last-event-id" not in headers
    assert (sub.decoder.comments_seen, sub.decoder.retry) == (1, 1234)
    assert conn.hub.subscriber_count == 1

    sub.send(HEALTH)  # a stream's client has nothing more to say: ignored
    writes = len(sub.transport.writes)
    conn.send(publish("https://example.com/books/1", "one", id="b1"))
    conn.send(publish("https://example.com/authors/1", "other", id="a1"))
    conn.send(publish("https://example.com/books/2", "two", id="b2"))
    one, two = await sub.next_events(2)
    assert [(one.id, one.data), (two.id, two.data)] == [("b1", "one"), ("b2", "two")]
    sub.transport.peer_reads()
    last = await marker(conn, "https://example.com/books/3")
    assert [e.id for e in await sub.next_events(1)] == [last]  # a1 matched no selector
    assert len(sub.transport.writes) - writes <= 2  # one write per fan-out, never per event

    sub.transport.peer_closes()
    assert conn.hub.subscriber_count == 0
    await close_server(conn)


@in_loop
async def test_heartbeats_arrive_on_an_idle_stream() -> None:
    conn = await make_protocol(hub_settings(heartbeat=0.05))
    sub = await live_subscriber(conn.server, "t")

    def beats() -> int:
        assert sub.events() == []  # comments only, no event
        return sub.decoder.comments_seen - 1  # past the first comment

    await until(lambda: beats() >= 2, "two heartbeats")
    await close_server(conn)


@in_loop
async def test_refused_subscription_keeps_the_connection() -> None:
    conn = await make_protocol(hub_settings())
    conn.send(request("GET", f"{HUB}?topic=t"))  # no token, and anonymous is off
    conn.send(HEALTH)
    [(status, headers, body), (after, _, _)] = await conn.answers(2)
    assert (status, after) == (401, 200)
    assert headers["www-authenticate"].startswith("Bearer")
    assert "anonymous" in one_line(body)
    assert conn.hub.subscriber_count == 0
    await close_server(conn)


@pytest.mark.parametrize("length", [10, 1000])  # a head line made once and remembered, or not
def test_a_header_value_cannot_split_the_head(length: int) -> None:
    hostile = ("v\r\nSet-Cookie: x=1\x00\x7f\tend" + "z" * length)[:length]
    for _ in range(2):
        made = head(401, [("WWW-Authenticate", hostile), ("Link", "é")], 0, keep_alive=True)
        lines = made.split(b"\r\n")
        assert lines[:2] == [b"HTTP/1.1 401 Unauthorized", b"Server: ssehub"]
        assert lines[2] == ("WWW-Authenticate: " + field_value(hostile)).encode()
        assert lines[3:] == [
            "Link: é".encode(),
            b"Content-Length: 0",
            b"Connection: keep-alive",
            b"",
            b"",
        ]
        cleaned = field_value(hostile)
        assert not set(cleaned) & set("\r\n\x00\x7f")
        assert ("\t" in cleaned) == ("\t" in hostile)  # a tab may stay
