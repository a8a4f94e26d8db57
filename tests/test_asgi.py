"""ssehub mounted in a FastAPI app served by uvicorn, driven over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import httpx
import pytest

from ssehub import Event, Settings
from ssehub.asgi import HubApp, Message

from .backends import failing, intercept_since
from .support import (
    HUB,
    KEY,
    HubProcess,
    check_stream_ends_and_resumes,
    free_port,
    make_token,
    raw_head,
    serve_process,
    wait_until,
)


@pytest.fixture(scope="module")
def fastapi_hub() -> Iterator[HubProcess]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "tests.asgi_app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    h = serve_process(cmd, port, env={**os.environ, "SSEHUB_TEST_KEY": KEY})
    yield h
    h.stop()


def test_mounted_hub_publishes_and_streams(fastapi_hub: HubProcess) -> None:
    with fastapi_hub.subscribe("https://example.com/books/{id}") as sub:
        assert sub.status == 200
        assert sub.headers["content-type"] == "text/event-stream; charset=utf-8"
        over_http = fastapi_hub.publish("https://example.com/books/1", "from a publisher")
        assert over_http.status_code == 200
        in_process = httpx.post(fastapi_hub.base + "/books/2", params={"title": "Dune"})
        assert in_process.status_code == 200
        events = sub.events(2)
        assert [(e.id, e.data) for e in events] == [
            (over_http.text, "from a publisher"),
            (in_process.json()["id"], "Dune"),
        ]


def test_mounted_hub_keeps_the_protocol_rules(fastapi_hub: HubProcess) -> None:
    no_token = httpx.post(fastapi_hub.url, data={"topic": "t"})
    assert no_token.status_code == 401
    assert "no token" in no_token.text
    no_topic = fastapi_hub.publish([], "x")
    assert no_topic.status_code == 400
    private_topic = "https://example.com/private/1"
    allowed = make_token(subscribe=[private_topic])
    with (
        fastapi_hub.subscribe(private_topic, token=allowed) as good,
        fastapi_hub.subscribe(private_topic) as anonymous,
    ):
        secret = fastapi_hub.publish(private_topic, "secret", private="on").text
        public = fastapi_hub.publish(private_topic, "public").text
        assert [e.id for e in good.events(2)] == [secret, public]
        assert [e.id for e in anonymous.events(1)] == [public]
    with fastapi_hub.subscribe(private_topic, last_event_id=secret) as resumed:
        assert resumed.headers["last-event-id"] == secret
        assert [e.id for e in resumed.events(1)] == [public]


def test_event_source_response_helper(fastapi_hub: HubProcess) -> None:
    from ssehub.sse import Decoder

    with httpx.stream("GET", fastapi_hub.base + "/countdown") as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        decoder = Decoder()
        events = []
        for chunk in answer.iter_bytes():
            events += decoder.feed(chunk)
    assert [(e.id, e.event, e.data) for e in events] == [
        (f"tick-{n}", "tick", f"{n}\nsecond line") for n in (3, 2, 1)
    ]


def test_mounted_hub_refuses_costly_templates(fastapi_hub: HubProcess) -> None:
    with fastapi_hub.subscribe("urn:x:" + "{/a}{.b}" * 150) as bomb:
        assert bomb.status == 400
        assert b"too many template expressions" in bomb.body


# -- the same limits as the standalone server ------------------------------------------------


def asgi_hub(**settings: str) -> HubProcess:
    """``uvicorn --factory ssehub.asgi:from_env`` configured by SSEHUB_* variables."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "ssehub.asgi:from_env"]
    # A long keep-alive, as behind a proxy: a stream the hub ends must close its connection
    # itself rather than wait for uvicorn's idle timer (5 s by default).
    cmd += ["--port", str(port), "--log-level", "warning", "--timeout-keep-alive", "600"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSEHUB_")}
    env.update(SSEHUB_JWT_KEY=KEY, SSEHUB_ANONYMOUS="1", SSEHUB_HEARTBEAT="0")
    env.update({"SSEHUB_" + name.upper(): value for name, value in settings.items()})
    return serve_process(cmd, port, env=env)


def metric(hub: HubProcess, name: str) -> float:
    for line in httpx.get(hub.base + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_asgi_closes_a_slow_reader_which_resumes() -> None:
    h = asgi_hub(max_write_buffer="65536")
    topic = "urn:asgi:slow"
    try:
        with h.subscribe(topic, rcvbuf=4096) as slow, h.subscribe(topic) as fast:
            ids = []
            with httpx.Client() as client:
                for i in range(2000):
                    r = client.post(
                        h.url,
                        data={"topic": topic, "data": "x" * 2048, "id": f"s{i}"},
                        headers={"Authorization": f"Bearer {h.publisher_token}"},
                    )
                    ids.append(r.text)
                    if i % 100 == 99:
                        assert [e.id for e in fast.events(100)] == ids[i - 99 : i + 1]
            assert metric(h, "ssehub_slow_consumers_closed_total") == 1
            # Its response ends and the connection closes once it reads what was sent.
            assert slow.wait_closed(10)
            received = len(slow.pending)
            assert received < 2000
            last = slow.pending[-1].id if slow.pending else "earliest"
            with h.subscribe(topic, last_event_id=last) as back:
                rest = back.events(2000 - received)
                assert [e.id for e in slow.pending + rest] == ids
    finally:
        h.stop()


def test_asgi_write_timeout_ends_streams_which_resume() -> None:
    h = asgi_hub(write_timeout="1")
    try:
        check_stream_ends_and_resumes(h)
    finally:
        h.stop()


def test_asgi_dispatch_timeout_closes_a_reader_that_stopped() -> None:
    # A buffer bound far above what is published: only the dispatch timeout can close it.
    h = asgi_hub(dispatch_timeout="1", max_write_buffer=str(256 << 20))
    try:
        with h.subscribe("t", rcvbuf=4096) as stuck, h.subscribe("t") as fine:
            deadline = time.monotonic() + 60
            with httpx.Client() as client:
                while metric(h, "ssehub_slow_consumers_closed_total") < 1:
                    assert time.monotonic() < deadline, "the stopped reader was never closed"
                    for _ in range(50):
                        client.post(
                            h.url,
                            data={"topic": "t", "data": "x" * 2000},
                            headers={"Authorization": f"Bearer {h.publisher_token}"},
                        )
                    fine.events(50)
            assert stuck.wait_closed(10)
            probe = h.publish("t", "probe").text
            assert [e.id for e in fine.events(1)] == [probe]
    finally:
        h.stop()


def test_asgi_refuses_long_urls_and_large_heads() -> None:
    h = asgi_hub(max_url_length="1024", max_head_size="4096")
    try:
        url = f"GET {HUB}?topic={'a' * 1100} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        answer = raw_head(h.port, url)
        assert answer.startswith(b"HTTP/1.1 414 "), answer[:100]
        big = f"GET {HUB}?topic=a HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 5000}\r\n\r\n".encode()
        answer = raw_head(h.port, big)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        fine = f"GET {HUB}?topic=a HTTP/1.1\r\nHost: x\r\nX-Small: {'b' * 500}\r\n\r\n".encode()
        assert raw_head(h.port, fine).startswith(b"HTTP/1.1 200 ")
    finally:
        h.stop()


def test_a_cancelled_stream_leaves_no_task_behind() -> None:
    """Cancelling the ASGI call of a stream (the server gives up on it) ends its sender and
    its disconnect watcher too; before, both were left running, one per stream."""
    from ssehub import Event, Settings
    from ssehub.asgi import HubApp

    async def go() -> None:
        app = HubApp(Settings(publisher_jwt_key=KEY, subscriber_jwt_key=KEY, anonymous=True))
        await app.start()
        for _ in range(100):  # a replay larger than one chunk: the sender must send it
            await app.hub.publish(Event(("t",), "x" * 2000))
        never = asyncio.Event()  # a client that neither reads nor leaves
        sent: list[object] = []

        async def receive() -> dict[str, object]:
            await never.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message["type"])
            if message["type"] == "http.response.body":
                await never.wait()

        scope = {
            "type": "http",
            "method": "GET",
            "path": HUB,
            "query_string": b"topic=t&lastEventID=earliest",
            "headers": [],
        }
        before = asyncio.all_tasks()
        call = asyncio.create_task(app(scope, receive, send))
        deadline = asyncio.get_running_loop().time() + 10
        while "http.response.body" not in sent:  # the stream is blocked in a send
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        for _ in range(10):  # whatever was cancelled gets its turns to finish
            await asyncio.sleep(0)
        assert asyncio.all_tasks() - before - {call} == set()
        assert app.hub.subscriber_count == 0
        await app.close()

    asyncio.run(go())


def test_asgi_bounds_template_expressions_per_client_address() -> None:
    h = asgi_hub(max_template_expressions_per_address="40")
    templates = [f"urn:asgi:{{a{i}}}" for i in range(32)]
    try:
        with h.subscribe(templates) as first:
            assert first.status == 200
            with h.subscribe(templates[:16]) as refused:
                assert refused.status == 429
                assert "--max-template-expressions-per-address" in refused.body.decode()

        def accepted() -> bool:  # given back once the first stream has ended
            with h.subscribe(templates[:16]) as again:
                return again.status == 200

        wait_until(accepted, "the address's template expressions to be given back")
    finally:
        h.stop()


def subscribe_in_process(
    app: HubApp, query: bytes
) -> tuple[asyncio.Task[None], list[Message], asyncio.Event]:
    """An ASGI call that subscribes to ``app``: its task, what it sends, and the client's
    leaving (set it to disconnect)."""
    leave = asyncio.Event()
    sent: list[Message] = []

    async def receive() -> Message:
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": HUB, "query_string": query, "headers": []}
    return asyncio.create_task(app(scope, receive, send)), sent, leave


def test_asgi_write_timeout_counts_from_the_live_stream_not_a_slow_history() -> None:
    """A history slower than --write-timeout does not end the stream before its head (it
    used to end with no response at all): the deadline starts once the stream is live."""

    async def go() -> None:
        settings = Settings(
            publisher_jwt_key=KEY, subscriber_jwt_key=KEY, anonymous=True, write_timeout=5
        )
        app = HubApp(settings)
        await app.start()
        first = (await app.hub.publish(Event(("t",), "x"))).id
        reading, release = asyncio.Event(), asyncio.Event()

        async def slow(_: int) -> None:
            reading.set()
            await release.wait()

        intercept_since(app.hub.backend, slow)
        call, sent, leave = subscribe_in_process(app, b"topic=t&lastEventID=earliest")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not reading.is_set():
            assert loop.time() < deadline
            await asyncio.sleep(0)
        app._check_streams(loop.time() + 60)  # long past the deadline, had it started already
        release.set()
        while not any(first.encode() in m.get("body", b"") for m in sent):
            assert loop.time() < deadline and not call.done(), sent
            await asyncio.sleep(0)
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
        while not call.done():  # once live, the deadline holds
            assert loop.time() < deadline
            app._check_streams(loop.time() + 60)
            await asyncio.sleep(0)
        assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
        leave.set()
        await app.close()

    asyncio.run(go())


@pytest.mark.parametrize("failing_read", [1, 2], ids=["before-the-head", "after-the-head"])
def test_asgi_stream_that_fails_to_start_is_answered_or_closed(
    failing_read: int, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error while a stream starts is logged with its traceback and answered
    500 with one line if nothing went out yet, else the response ends (it used to escape
    the app as an exception group)."""

    async def go() -> None:
        app = HubApp(Settings(publisher_jwt_key=KEY, subscriber_jwt_key=KEY, anonymous=True))
        await app.start()
        # Fan out before each publish returns: one left waiting for company (a loaded
        # machine makes a fan-out look costly) would keep the last events out of the replay.
        app.hub.fanout.max_coalesce = 0
        for _ in range(100):  # two replay pages: the second read comes after the head
            await app.hub.publish(Event(("t",), "x" * 2000))
        intercept_since(app.hub.backend, failing(failing_read))
        call, sent, leave = subscribe_in_process(app, b"topic=t&lastEventID=earliest")
        await asyncio.wait_for(call, 10)
        bodies = [m for m in sent if m["type"] == "http.response.body"]
        if failing_read == 1:
            assert sent[0]["status"] == 500
            reason = b"the hub failed to open this stream; its log says why\n"
            assert bodies == [{"type": "http.response.body", "body": reason}]
        else:
            assert sent[0]["status"] == 200
            assert b"id: " in bodies[0]["body"]
            assert bodies[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
        assert "a stream failed to start" in caplog.text and "RuntimeError: boom" in caplog.text
        assert app.hub.subscriber_count == 0
        leave.set()
        await app.close()

    asyncio.run(go())
