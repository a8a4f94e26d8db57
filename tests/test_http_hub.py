"""The hub over real sockets, started as a user would (`ssehub serve`)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from .support import (
    HUB,
    KEY,
    HubProcess,
    iter_responses,
    make_token,
    raw_request,
    start_hub,
    wait_until,
)


def unique(name: str) -> str:
    return f"https://example.com/{name}/{uuid.uuid4().hex[:8]}"


# -- streams and delivery ----------------------------------------------------------------------


def test_stream_head_and_first_comment(hub: HubProcess) -> None:
    with hub.subscribe(unique("head")) as sub:
        assert sub.status == 200
        assert sub.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "no-cache" in sub.headers["cache-control"]
        assert sub.headers["x-accel-buffering"] == "no"
        assert 'rel="mercure"' in sub.headers["link"]
        assert "last-event-id" not in sub.headers  # none was asked for
        # The first comment is flushed with the head, before any event.
        sub.read_until(lambda: sub.decoder.comments_seen >= 1, "the first comment")
        assert (sub.decoder.comments_seen, sub.pending) == (1, [])


def test_delivery_by_exact_star_template_and_alternate(hub: HubProcess) -> None:
    base = unique("books")
    canonical, alternate = f"{base}/42", unique("alt")
    with (
        hub.subscribe(canonical) as exact,
        hub.subscribe("*") as star,
        hub.subscribe(base + "/{id}") as template,
        hub.subscribe(alternate) as by_alternate,
        hub.subscribe(base + "/{id}/reviews") as other,
        hub.subscribe([canonical, base + "/{id}", "*"]) as several,
    ):
        answer = hub.publish([canonical, alternate], "payload")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        event_id = answer.text
        for sub in (exact, template, by_alternate, several):
            [event] = sub.events(1)
            assert (event.id, event.data) == (event_id, "payload")
        assert event_id in [e.id for e in star.events(1)]
        # One delivery even when several selectors match, and none for a non-matching one:
        # the marker published after it is the very next event each of them sees.
        marker = hub.publish([canonical, base + "/7/reviews"], "marker").text
        several.next_is(marker)
        other.next_is(marker)


def test_event_fields_and_every_line_end(hub: HubProcess) -> None:
    topic = unique("fields")
    with hub.subscribe(topic) as sub:
        hub.publish(
            topic,
            "a\nb\rc\r\n  d\n",
            id="https://example.com/events/1?x=y",
            type="book.updated",
            retry="2500",
        )
        hub.publish(topic, "", id="évent ünïcode 1")
        first, second = sub.events(2)
        assert first.data == "a\nb\nc\n  d\n"
        assert first.id == "https://example.com/events/1?x=y"
        assert first.event == "book.updated"
        assert first.retry == 2500
        assert (second.data, second.id, second.event) == ("", "évent ünïcode 1", "message")


def test_generated_ids_are_unique_iris_and_order_holds(hub: HubProcess) -> None:
    topic = unique("order")
    with hub.subscribe(topic) as one, hub.subscribe(topic) as two, httpx.Client() as client:
        ids = []
        for i in range(200):
            r = client.post(
                hub.url,
                data={"topic": topic, "data": str(i)},
                headers={"Authorization": f"Bearer {hub.publisher_token}"},
            )
            ids.append(r.text)
        assert len(set(ids)) == 200
        assert all(i.startswith("urn:uuid:") for i in ids)
        for sub in (one, two):
            events = sub.events(200)
            assert [e.id for e in events] == ids
            assert [e.data for e in events] == [str(i) for i in range(200)]


def test_private_updates_reach_only_authorized_subscribers(hub: HubProcess) -> None:
    books = "https://example.com/books/{id}"
    canonical = f"https://example.com/books/{uuid.uuid4().hex[:6]}"
    alternate = (
        f"https://example.com/users/foo/?topic={canonical.replace(':', '%3A').replace('/', '%2F')}"
    )
    allowed = make_token(subscribe=["https://example.com/users/foo/{?topic}"])
    unrelated = make_token(subscribe=["https://example.com/users/bar/{?topic}"])
    with (
        hub.subscribe(books, token=allowed) as good,
        hub.subscribe(books, token=unrelated) as bad,
        hub.subscribe(books) as anonymous,
    ):
        secret = hub.publish([canonical, alternate], "secret", private="on").text
        public = hub.publish(canonical, "public").text
        assert [e.id for e in good.events(2)] == [secret, public]
        assert [e.id for e in bad.events(1)] == [public]  # the private one was skipped
        assert [e.id for e in anonymous.events(1)] == [public]


# -- publishing: refusals, pipelining ------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "status", "word"),
    [
        ({"data": "x"}, 400, "topic"),
        ({"topic": "t", "id": "#x"}, 400, "#"),
        ({"topic": "t", "id": "a\nb"}, 400, "control"),
        ({"topic": "t", "id": "a\x01b"}, 400, "control"),
        ({"topic": "t", "retry": "abc"}, 400, "retry"),
        ({"topic": "t", "type": "a\rb"}, 400, "type"),
    ],
)
def test_publish_refusals(hub: HubProcess, form: dict[str, str], status: int, word: str) -> None:
    r = httpx.post(hub.url, data=form, headers={"Authorization": f"Bearer {hub.publisher_token}"})
    assert r.status_code == status
    assert word in r.text
    assert r.text.count("\n") == 1
    assert r.text.endswith("\n")


def test_http_refusals(hub: HubProcess) -> None:
    auth = {"Authorization": f"Bearer {hub.publisher_token}"}
    r = httpx.post(hub.url, json={"topic": "t"}, headers=auth)
    assert (r.status_code, "x-www-form-urlencoded" in r.text) == (415, True)
    r = httpx.post(hub.url, data={"topic": "t", "data": "x" * (1 << 21)}, headers=auth)
    assert r.status_code == 413
    r = httpx.get(hub.base + "/nope")
    assert (r.status_code, HUB in r.text) == (404, True)
    r = httpx.put(hub.url, content=b"")
    assert (r.status_code, r.headers["allow"]) == (405, "GET, POST, OPTIONS")
    r = httpx.get(hub.url)
    assert (r.status_code, "topic" in r.text) == (400, True)
    head = b"GET /.well-known/mercure?topic=a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000
    assert raw_request(hub.port, head + b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    url = b"GET /.well-known/mercure?topic=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert raw_request(hub.port, url).startswith(b"HTTP/1.1 414 ")
    assert raw_request(hub.port, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def post(body: str, token: str, close: bool = False) -> bytes:
    return (
        f"POST {HUB} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body.encode())}\r\n"
        + ("Connection: close\r\n" if close else "")
        + f"\r\n{body}"
    ).encode()


def test_pipelined_publishes_are_answered_in_order(hub: HubProcess) -> None:
    topic = unique("pipe")
    token = hub.publisher_token
    with hub.subscribe(topic) as sub:
        batch = b"".join(
            [
                post(f"topic={topic}&data=a&id=p1", token),
                post("data=no-topic", token),
                post(f"topic={topic}&data=b&id=p2", token),
                post(f"topic={topic}&data=c&id=p3", token, close=True),
            ]
        )
        answers = list(iter_responses(raw_request(hub.port, batch)))  # reads until the hub closes
        assert [(status, body) for status, _, body in answers] == [
            (200, b"p1"),
            (400, b"missing topic: a publish needs at least one topic field\n"),
            (200, b"p2"),
            (200, b"p3"),
        ]
        assert answers[-1][1]
        assert [e.id for e in sub.events(3)] == ["p1", "p2", "p3"]


# -- auth ----------------------------------------------------------------------------------------


def test_publisher_auth(hub: HubProcess) -> None:
    topic = unique("auth")
    form = {"topic": topic, "data": "x"}
    r = httpx.post(hub.url, data=form)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer ")
    assert "no token" in r.text
    for token, word in [
        (make_token("another-key-0123456789-0123456789", publish=["*"]), "signature"),
        (make_token(publish=["*"], exp=time.time() - 60), "expired"),
        ("abc", "well-formed"),
    ]:
        r = httpx.post(hub.url, data=form, headers={"Authorization": f"Bearer {token}"})
        assert (r.status_code, word in r.text, "Authorization header" in r.text) == (
            401,
            True,
            True,
        )
    narrow = make_token(publish=[topic])
    with hub.subscribe("*") as star:
        r = httpx.post(
            hub.url,
            data={"topic": [topic, "https://example.com/other"], "data": "x"},
            headers={"Authorization": f"Bearer {narrow}"},
        )
        assert r.status_code == 403
        assert "https://example.com/other" in r.text
        star.next_is(hub.publish(topic, "marker").text)  # the refused one was not dispatched
    r = httpx.post(hub.url, params={"authorization": narrow}, data=form)
    assert r.status_code == 200
    # The header wins over the query parameter and the cookie.
    r = httpx.post(
        hub.url,
        params={"authorization": narrow},
        data=form,
        headers={"Authorization": "Bearer abc", "Cookie": f"mercureAuthorization={narrow}"},
    )
    assert r.status_code == 401
    # A cookie alone does not publish: browsers send cookies cross-site (CSRF).
    r = httpx.post(hub.url, data=form, headers={"Cookie": f"mercureAuthorization={narrow}"})
    assert r.status_code == 403
    assert "Origin" in r.text


@pytest.fixture(scope="module")
def closed_hub() -> Iterator[HubProcess]:
    h = start_hub("--no-demo", "--heartbeat", "0")
    yield h
    h.stop()


def test_subscriber_auth_without_anonymous(closed_hub: HubProcess) -> None:
    topic = unique("closed")
    token = make_token(subscribe=[])
    with closed_hub.subscribe(topic) as nobody:
        assert nobody.status == 401
        assert "anonymous" in nobody.body.decode()
    for sub in (
        closed_hub.subscribe(topic, token=token),
        closed_hub.subscribe(topic, headers={"Cookie": f"mercureAuthorization={token}"}),
        closed_hub.subscribe(topic, query=[("authorization", token)]),
    ):
        with sub:
            assert sub.status == 200
    with closed_hub.subscribe(topic, token=make_token(KEY + "x", subscribe=[])) as forged:
        assert forged.status == 401
        assert "signature" in forged.body.decode()


def test_stream_closes_when_its_token_expires(closed_hub: HubProcess) -> None:
    token = make_token(subscribe=["*"], exp=time.time() + 2)
    with closed_hub.subscribe(unique("exp"), token=token) as sub:
        assert sub.status == 200
        assert sub.wait_closed()
        # The stream lived a second or more on a hub started with --heartbeat 0: the first
        # comment was its only one (heartbeats at an interval are tested in test_protocol).
        assert sub.decoder.comments_seen == 1


def test_publish_retried_with_its_id_is_delivered_once(hub: HubProcess) -> None:
    topic = unique("retry")
    with hub.subscribe(topic) as sub:
        event_id = unique("urn:retry")
        first = hub.publish(topic, "once", id=event_id)
        retried = hub.publish(topic, "once", id=event_id)
        assert (first.status_code, first.text) == (200, event_id)
        assert (retried.status_code, retried.text) == (200, event_id)
        after = hub.publish(topic, "after").text
        assert [e.id for e in sub.events(2)] == [event_id, after]


def test_topic_longer_than_the_bound_is_refused(hub: HubProcess) -> None:
    """Topics live in history, routes and caches: a publish's topics are bounded (2 KiB by
    default), with a 400 that says so; other streams carry on."""
    topic = unique("long")
    with hub.subscribe(topic) as sub:
        too_long = hub.publish([topic, "urn:" + "x" * 2045], "refused")
        assert too_long.status_code == 400
        assert "topic too long: 2049 characters, at most 2048" in too_long.text
        longest = hub.publish([topic, "urn:" + "x" * 2044], "taken")
        assert longest.status_code == 200
        assert [e.data for e in sub.events(1)] == ["taken"]


# -- history and resume --------------------------------------------------------------------------


def test_resume_by_header_by_query_and_header_wins(fresh_hub: HubProcess) -> None:
    topic = unique("resume")
    ids = [fresh_hub.publish(topic, f"e{i}").text for i in range(3)]
    with fresh_hub.subscribe(topic, last_event_id=ids[0]) as by_header:
        assert by_header.headers["last-event-id"] == ids[0]
        assert [e.id for e in by_header.events(2)] == ids[1:]
        live = fresh_hub.publish(topic, "live").text
        assert [e.id for e in by_header.events(1)] == [live]
    with fresh_hub.subscribe(topic, query=[("lastEventID", ids[1])]) as by_query:
        assert by_query.headers["last-event-id"] == ids[1]
        assert [e.id for e in by_query.events(2)] == [ids[2], live]
    with fresh_hub.subscribe(topic, last_event_id=ids[2], query=[("lastEventID", ids[0])]) as both:
        assert both.headers["last-event-id"] == ids[2]
        assert [e.id for e in both.events(1)] == [live]
        both.next_is(fresh_hub.publish(topic, "marker").text)


def test_earliest_and_custom_ids(fresh_hub: HubProcess) -> None:
    topic = unique("earliest")
    fresh_hub.publish(unique("elsewhere"), "not for us")
    ids = [
        fresh_hub.publish(topic, f"e{i}", id=f"https://example.com/rev/{i}").text for i in range(3)
    ]
    with fresh_hub.subscribe(topic, query=[("lastEventID", "earliest")]) as sub:
        assert sub.headers["last-event-id"] == "earliest"
        assert [e.id for e in sub.events(3)] == ids
    with fresh_hub.subscribe(topic, last_event_id="https://example.com/rev/0") as sub:
        assert [e.id for e in sub.events(2)] == ids[1:]
    # A browser sends a non-ASCII Last-Event-ID as UTF-8 bytes; it must find its event.
    unicode_id = fresh_hub.publish(topic, "u", id="révision ünïcode").text
    after = fresh_hub.publish(topic, "after").text
    with fresh_hub.subscribe(topic, last_event_id=unicode_id) as sub:
        assert sub.headers["last-event-id"].encode("latin-1").decode() == unicode_id
        assert [e.id for e in sub.events(1)] == [after]


@pytest.mark.parametrize("asked", ["evicted", "unknown"])
def test_gap_is_never_silent(fresh_hub: HubProcess, asked: str) -> None:
    topic = unique("gap")
    ids = [fresh_hub.publish(topic, f"e{i}").text for i in range(8)]  # history keeps 5
    requested = ids[0] if asked == "evicted" else "urn:uuid:never-published"
    with fresh_hub.subscribe(topic, last_event_id=requested) as sub:
        assert sub.headers["last-event-id"] == "earliest"
        gap, *replayed = sub.events(6)
        assert gap.event == "ssehub.gap"
        notice = json.loads(gap.data)
        assert notice["requested"] == requested
        assert notice["replayFrom"] == ids[3]
        assert [e.id for e in replayed] == ids[3:]
        live = fresh_hub.publish(topic, "live").text
        assert [e.id for e in sub.events(1)] == [live]


def test_a_gap_notice_names_only_an_event_the_subscriber_may_see(fresh_hub: HubProcess) -> None:
    """``replayFrom`` is where this subscriber's replay starts, never the oldest event in
    history whatever its topic: that would hand out the id of another topic's (private)
    update."""
    secret, public = unique("secret"), unique("public")
    assert fresh_hub.publish(secret, "s", id="secret-update", private="on").status_code == 200
    assert fresh_hub.publish(unique("other"), "o", id="other-update").status_code == 200
    first = fresh_hub.publish(public, "p", id="public-update").text
    with fresh_hub.subscribe(public, last_event_id="urn:uuid:never-published") as sub:
        gap, replayed = sub.events(2)
        assert gap.event == "ssehub.gap"
        assert json.loads(gap.data)["replayFrom"] == first
        assert replayed.id == first
    # Nothing of its topics in history: the notice names no event at all.
    with fresh_hub.subscribe(unique("quiet"), last_event_id="urn:uuid:never-published") as sub:
        [gap] = sub.events(1)
        assert json.loads(gap.data)["replayFrom"] is None


def test_resume_while_publishing_has_no_gap_and_no_duplicate(hub: HubProcess) -> None:
    topic = unique("race")
    published: list[str] = []
    stop = threading.Event()

    def publisher() -> None:
        with httpx.Client() as client:
            while not stop.is_set() and len(published) < 400:
                r = client.post(
                    hub.url,
                    data={"topic": topic, "data": "x"},
                    headers={"Authorization": f"Bearer {hub.publisher_token}"},
                )
                published.append(r.text)

    first_id = hub.publish(topic, "first").text
    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        # Resume while publishes are flowing: some before the subscribe, more after it.
        wait_until(lambda: len(published) >= 20, "the first publishes")
        with hub.subscribe(topic, last_event_id=first_id) as sub:
            thread.join(20)
            got = [e.id for e in sub.events(len(published), timeout=20)]
            sub.next_is(hub.publish(topic, "marker").text)  # and no duplicate after them
    finally:
        stop.set()
        thread.join()
    assert len(published) == 400
    assert got == published


# -- stream behaviour ----------------------------------------------------------------------------


def test_slow_reader_is_closed_and_fast_one_keeps_up() -> None:
    h = start_hub("--anonymous", "--no-demo", "--heartbeat", "0", "--max-write-buffer", "65536")
    topic = unique("slow")
    try:
        with h.subscribe(topic, rcvbuf=4096) as slow, h.subscribe(topic) as fast:
            payload = "x" * 2048
            with httpx.Client() as client:
                ids = []
                for i in range(2000):
                    r = client.post(
                        h.url,
                        data={"topic": topic, "data": payload, "id": f"s{i}"},
                        headers={"Authorization": f"Bearer {h.publisher_token}"},
                    )
                    ids.append(r.text)
                    if i % 100 == 99:  # the fast reader reads as it goes
                        assert [e.id for e in fast.events(100)] == ids[i - 99 : i + 1]
            # The slow reader was cut off: it holds what was buffered, then the stream ends.
            assert slow.wait_closed()
            received = len(slow.pending)
            assert received < 2000
            probe = h.publish(topic, "probe").text
            assert [e.id for e in fast.events(1)] == [probe]
            # It resumes where it stopped, from history, and loses nothing.
            last = slow.pending[-1].id if slow.pending else "earliest"
            with h.subscribe(topic, last_event_id=last) as back:
                rest = back.events(2001 - received)
                assert [e.id for e in slow.pending + rest] == [*ids, probe]
    finally:
        h.stop()
