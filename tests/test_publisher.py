"""Publisher and AsyncPublisher against a real hub, and through a flaky front that fails on
purpose (drops a request, answers 5xx or 4xx) to show what is retried, and with which id."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx
import jwt
import pytest

from ssehub import publisher as publisher_module
from ssehub.client import (
    AsyncPublisher,
    HubRefused,
    HubUnavailable,
    Publisher,
    Retries,
    publish,
)

from .support import KEY, HubProcess, free_port, make_token

FAST = Retries(attempts=4, backoff=0.01, max_backoff=0.05, deadline=10.0)


@dataclass
class Attempt:
    body: dict[str, list[str]]
    authorization: str
    connection: int


@dataclass
class FlakyHub:
    """A front for a real hub on its own port. Each request takes the next action of
    ``script`` ("drop": close without answering, "forward", or a status code to answer with);
    when the script runs out it forwards. Records every request and the connection it came on.
    """

    target: str
    script: list[str | int]
    port: int = field(default_factory=free_port)
    attempts: list[Attempt] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self._forward = httpx.Client(timeout=10)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/mercure"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        with conn:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                with self._lock:
                    self.attempts.append(
                        Attempt(parse_qs(body.decode()), headers.get("authorization", ""), number)
                    )
                    action = self.script.pop(0) if self.script else "forward"
                if action == "drop":
                    return
                if action == "forward":
                    answer = self._forward.post(
                        self.target,
                        content=body,
                        headers={
                            "Authorization": headers.get("authorization", ""),
                            "Content-Type": headers.get("content-type", ""),
                        },
                    )
                    status, text = answer.status_code, answer.text
                else:
                    status, text = int(action), f"scripted {action}"
                payload = text.encode()
                conn.sendall(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n"
                    "Content-Type: text/plain\r\n\r\n".encode()
                    + payload
                )

    def close(self) -> None:
        self._listener.close()
        self._forward.close()


@pytest.fixture
def flaky(hub: HubProcess) -> Iterator[Callable[..., FlakyHub]]:
    made: list[FlakyHub] = []

    def make(*script: str | int) -> FlakyHub:
        front = FlakyHub(hub.url, list(script))
        made.append(front)
        return front

    yield make
    for front in made:
        front.close()


def test_publisher_mints_a_token_and_sends_json(hub: HubProcess) -> None:
    with (
        hub.subscribe("urn:pub:{n}") as anonymous,
        hub.subscribe("urn:pub:{n}", token=make_token(subscribe=["urn:pub:{n}"])) as member,
        Publisher(hub.url, key=KEY) as pub,
    ):
        first = pub.publish("urn:pub:1", {"title": "Dune", "année": 1965}, type="book", retry=5000)
        private = pub.publish(["urn:pub:2", "urn:pub:alt"], "secret", private=True)
        text = pub.publish("urn:pub:3", b"plain \xe2\x9c\x93", id="my-own-id")
        got = member.events(3)
        public = anonymous.events(2)
    assert first.startswith("urn:uuid:")
    assert private.startswith("urn:uuid:")
    assert text == "my-own-id"
    assert [(e.id, e.event, e.data) for e in got] == [
        (first, "book", '{"title":"Dune","année":1965}'),
        (private, "message", "secret"),
        (text, "message", "plain ✓"),
    ]
    assert got[0].retry == 5000
    assert [e.id for e in public] == [first, text]  # the private update only to the member


def test_refusals_carry_the_hubs_reason(hub: HubProcess) -> None:
    narrow = make_token(publish=["urn:mine:*"])
    with Publisher(hub.url, token=narrow) as pub, pytest.raises(HubRefused) as refused:
        pub.publish("urn:theirs", "x")
    assert refused.value.status == 403
    assert "urn:theirs" in refused.value.reason
    with (
        Publisher(hub.url, key="not-the-hub-key-0123456789-0123456789") as pub,
        pytest.raises(HubRefused) as refused,
    ):
        pub.publish("urn:any", "x")
    assert refused.value.status == 401
    assert "signature" in refused.value.reason.lower()


def test_minted_token_has_the_claims_and_is_minted_again_before_it_expires(
    flaky: Callable[..., FlakyHub], monkeypatch: pytest.MonkeyPatch
) -> None:
    front = flaky()
    now = [time.time()]
    monkeypatch.setattr(publisher_module, "_clock", lambda: now[0])
    with Publisher(
        front.url, key=KEY, selectors=["urn:a:{x}"], token_lifetime=600, claims={"sub": "app"}
    ) as pub:
        pub.publish("urn:a:1", "1")
        pub.publish("urn:a:2", "2")
        now[0] += 600 - 59  # inside the last minute of the token's life
        pub.publish("urn:a:3", "3")
    tokens = [a.authorization.removeprefix("Bearer ") for a in front.attempts]
    assert tokens[0] == tokens[1] != tokens[2]
    claims = jwt.decode(tokens[0], KEY, algorithms=["HS256"])
    assert claims["mercure"] == {"publish": ["urn:a:{x}"]}
    assert claims["sub"] == "app"
    assert "exp" in claims


def test_one_connection_for_many_publishes(flaky: Callable[..., FlakyHub]) -> None:
    front = flaky()
    with Publisher(front.url, key=KEY) as pub:
        for i in range(5):
            pub.publish("urn:reuse", str(i))
    assert len(front.attempts) == 5
    assert front.connections == 1


def test_a_dropped_request_is_retried_with_the_same_id(
    hub: HubProcess, flaky: Callable[..., FlakyHub]
) -> None:
    front = flaky("drop")
    with hub.subscribe("urn:retry") as sub, Publisher(front.url, key=KEY, retries=FAST) as pub:
        got = pub.publish("urn:retry", "once")
        marker = pub.publish("urn:retry", "marker")
        event, after = sub.events(2)
    assert after.id == marker  # nothing in between: the event came once
    assert [a.body["id"] for a in front.attempts] == [[got], [got], [marker]]
    assert got.startswith("urn:uuid:")
    assert event.id == got
    assert event.data == "once"


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried(flaky: Callable[..., FlakyHub], status: int) -> None:
    front = flaky(status, status, "drop")
    with Publisher(front.url, key=KEY, retries=FAST) as pub:
        got = pub.publish("urn:gw", "x", id="given-id")
    assert got == "given-id"
    assert [a.body["id"] for a in front.attempts] == [["given-id"]] * 4


def test_retries_are_bounded_in_count_and_raise_with_the_reason(
    flaky: Callable[..., FlakyHub],
) -> None:
    front = flaky(*[503] * 10)
    with (
        Publisher(front.url, key=KEY, retries=Retries(attempts=3, backoff=0.01)) as pub,
        pytest.raises(HubUnavailable) as failed,
    ):
        pub.publish("urn:down", "x")
    assert len(front.attempts) == 3
    assert failed.value.status == 503
    assert "scripted 503" in failed.value.reason


def test_retries_are_bounded_in_time(flaky: Callable[..., FlakyHub]) -> None:
    front = flaky(*[503] * 1000)
    patient = Retries(attempts=1000, backoff=0.02, max_backoff=0.02, deadline=0.2)
    with Publisher(front.url, key=KEY, retries=patient) as pub, pytest.raises(HubUnavailable):
        pub.publish("urn:down", "x")
    assert 1 < len(front.attempts) < 1000


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 429])
def test_4xx_is_not_retried(flaky: Callable[..., FlakyHub], status: int) -> None:
    front = flaky(status, "forward")
    with (
        Publisher(front.url, key=KEY, retries=FAST) as pub,
        pytest.raises(HubRefused) as refused,
    ):
        pub.publish("urn:bad", "x")
    assert len(front.attempts) == 1
    assert (refused.value.status, refused.value.reason) == (status, f"scripted {status}")


def test_unreachable_hub_raises_after_the_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}/.well-known/mercure"
    with (
        Publisher(url, key=KEY, retries=Retries(attempts=2, backoff=0.01)) as pub,
        pytest.raises(HubUnavailable) as failed,
    ):
        pub.publish("urn:nowhere", "x")
    assert failed.value.status is None
    assert "gave up after 2 attempts" in failed.value.reason
    assert isinstance(failed.value.__cause__, httpx.ConnectError)


def _publish_in_child(pub: Publisher, answers: multiprocessing.Queue[str]) -> None:
    answers.put(pub.publish("urn:fork", "child"))


def test_a_forked_process_opens_its_own_connection(flaky: Callable[..., FlakyHub]) -> None:
    front = flaky()
    with Publisher(front.url, key=KEY) as pub:
        pub.publish("urn:fork", "parent")
        fork = multiprocessing.get_context("fork")
        answers: multiprocessing.Queue[str] = fork.Queue()
        child = fork.Process(target=_publish_in_child, args=(pub, answers))
        child.start()
        child.join(20)
        assert child.exitcode == 0
        assert answers.get(timeout=5).startswith("urn:uuid:")
        pub.publish("urn:fork", "parent again")
    assert [a.connection for a in front.attempts] == [1, 2, 1]


def test_async_publisher_retries_with_the_same_id(
    hub: HubProcess, flaky: Callable[..., FlakyHub]
) -> None:
    front = flaky("drop", 503)

    async def go() -> list[str]:
        async with AsyncPublisher(front.url, key=KEY, retries=FAST) as pub:
            return [
                await pub.publish("urn:async", {"n": 1}),
                await pub.publish("urn:async", {"n": 2}, id="second"),
            ]

    with hub.subscribe("urn:async") as sub:
        ids = asyncio.run(go())
        events = sub.events(2)
    assert [(e.id, json.loads(e.data)) for e in events] == [
        (ids[0], {"n": 1}),
        ("second", {"n": 2}),
    ]
    assert [a.body["id"][0] for a in front.attempts] == [ids[0]] * 3 + ["second"]
    assert {a.connection for a in front.attempts[1:]} == {2}  # one connection after the drop


def test_key_or_token_not_both() -> None:
    with pytest.raises(ValueError, match="either a key"):
        Publisher("http://hub", key=KEY, token="t")
    with pytest.raises(ValueError, match="either a key"):
        Publisher("http://hub")


def test_threads_share_one_connection_pool(flaky: Callable[..., FlakyHub]) -> None:
    front = flaky()
    with Publisher(front.url, key=KEY) as pub, ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda n: pub.publish("urn:threads", str(n)), range(40)))
    assert len(set(ids)) == 40
    assert sorted(a.body["data"][0] for a in front.attempts) == sorted(map(str, range(40)))
    assert front.connections <= 8


def test_one_shot_publish_raises_hub_unavailable_on_5xx(flaky: Callable[..., FlakyHub]) -> None:
    front = flaky(503)
    with pytest.raises(HubUnavailable) as failed:
        asyncio.run(publish(front.url, "urn:once", "x", token=make_token(publish=["*"])))
    assert (failed.value.status, failed.value.reason) == (503, "scripted 503")
    assert len(front.attempts) == 1  # the one-shot function does not retry
    assert "id" not in front.attempts[0].body  # and leaves the id to the hub
