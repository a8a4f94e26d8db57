"""ssehub mounted in a FastAPI app served by uvicorn, driven over real sockets."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import httpx
import pytest

from .support import KEY, HubProcess, free_port, make_token, serve_process


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
