"""Mercure 1.0 (draft-08) against a real `ssehub serve`, beside 0.x on the same hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from urllib.parse import quote, urlencode

import httpx
import pytest

from ssehub.access_tokens import Matcher, mint_access_token

from .support import (
    HUB,
    KEY,
    HubProcess,
    SSEClient,
    free_port,
    make_token,
    serve_process,
    start_hub,
)

RESOURCE = "https://hub.example/.well-known/mercure"
API = HUB + "/subscriptions"
METADATA = "/.well-known/oauth-protected-resource/.well-known/mercure"
COOKIE = "__Secure-mercure_access_token"


@pytest.fixture(scope="module")
def hub() -> Iterator[HubProcess]:
    h = start_hub(
        "--no-demo", "--heartbeat", "0", "--anonymous", "--subscriptions", "--resource", RESOURCE
    )
    h.publisher_token = token(publish=["*"])
    yield h
    h.stop()


def token(
    publish: Sequence[str | Matcher] = (),
    subscribe: Sequence[str | Matcher] = (),
    audience: str = RESOURCE,
    payload: object = None,
) -> str:
    return mint_access_token(KEY, audience, publish=publish, subscribe=subscribe, payload=payload)


def subscribe(
    hub: HubProcess,
    params: Sequence[tuple[str, str]],
    headers: dict[str, str] | None = None,
) -> SSEClient:
    return SSEClient(hub.port, HUB + "?" + urlencode(params), dict(headers or {}))


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_publish_and_match(hub: HubProcess) -> None:
    with subscribe(hub, [("match", "urn:one"), ("match", "https://e.com/{x}")]) as sub:
        assert sub.status == 200, sub.body
        assert sub.headers["content-type"] == "text/event-stream; charset=utf-8"
        sent = hub.publish("urn:one", "hello", id="custom-1")
        assert sent.status_code == 200 and sent.text == "custom-1"
        assert sent.headers["content-type"].startswith("text/plain")
        [event] = sub.events(1)
        assert (event.id, event.data) == ("custom-1", "hello")
        # Exact means byte for byte: a 0.x reading of this selector would expand it.
        assert hub.publish("https://e.com/1", "no").status_code == 200
        marker = hub.publish("https://e.com/{x}", "literal").text
        sub.next_is(marker)


def test_match_urlpattern(hub: HubProcess) -> None:
    params = [("match_urlpattern", "https://example.net/foo/:random")]
    with subscribe(hub, params) as sub:
        assert sub.status == 200, sub.body
        hub.publish("https://example.net/bar/1", "not matching")
        hub.publish("https://example.net/foo/1/2", "deeper: not matching")
        wanted = hub.publish("https://example.net/foo/abc", "yes").text
        sub.next_is(wanted)


def test_private_updates_need_a_subscribe_grant(hub: HubProcess) -> None:
    granted = token(subscribe=[("urlpattern", "https://e.com/users/42/*")])
    other = token(subscribe=["https://e.com/users/99/inbox"])
    params = [("match_urlpattern", "https://e.com/users/:id/*")]
    with (
        subscribe(hub, params, bearer(granted)) as mine,
        subscribe(hub, params, bearer(other)) as theirs,
        subscribe(hub, params) as anonymous,
    ):
        assert (mine.status, theirs.status, anonymous.status) == (200, 200, 200)
        secret = hub.publish("https://e.com/users/42/inbox", "secret", private="on").text
        public = hub.publish("https://e.com/users/7/wall", "public").text
        [first, second] = mine.events(2)
        assert (first.id, first.data, second.id) == (secret, "secret", public)
        theirs.next_is(public)
        anonymous.next_is(public)


def test_custom_id_and_resume(hub: HubProcess) -> None:
    first = hub.publish("urn:resume", "1", id="r-1").text
    second = hub.publish("urn:resume", "2", id="r-2").text
    assert (first, second) == ("r-1", "r-2")
    with subscribe(hub, [("match", "urn:resume"), ("last_event_id", "r-1")]) as sub:
        assert sub.headers["mercure-last-event-id"] == "r-1"
        assert "last-event-id" not in sub.headers  # 0.x's name for it
        sub.next_is("r-2")
    # The Last-Event-ID request header wins over the query parameter.
    with subscribe(
        hub, [("match", "urn:resume"), ("last_event_id", "nope")], {"Last-Event-ID": "r-1"}
    ) as sub:
        assert sub.headers["mercure-last-event-id"] == "r-1"
        sub.next_is("r-2")
    # An id history does not hold: 'earliest', and the gap is said.
    with subscribe(hub, [("match", "urn:resume"), ("last_event_id", "gone")]) as sub:
        assert sub.headers["mercure-last-event-id"] == "earliest"
        [gap] = sub.events(1)
        assert gap.event == "ssehub.gap"


def test_cookie_and_header_precedence(hub: HubProcess) -> None:
    granted = token(subscribe=["urn:cookie"])
    params = [("match", "urn:cookie")]
    with subscribe(hub, params, {"Cookie": f"{COOKIE}={granted}"}) as sub:
        assert sub.status == 200
        secret = hub.publish("urn:cookie", "c", private="on").text
        sub.next_is(secret)
    # 0.x's cookie is not read for a 1.0 request: this one is anonymous and sees nothing.
    with subscribe(hub, params, {"Cookie": f"mercureAuthorization={granted}"}) as sub:
        assert sub.status == 200
        hub.publish("urn:cookie", "private", private="on")
        public = hub.publish("urn:cookie", "public").text
        sub.next_is(public)
    # The header wins over the cookie: a bad header is refused, whatever the cookie says.
    headers = {"Cookie": f"{COOKIE}={granted}", **bearer("not-a-jwt")}
    with subscribe(hub, params, headers) as sub:
        assert sub.status == 401


@pytest.mark.parametrize("name", ["access_token", "authorization"])
def test_query_string_token_is_refused(hub: HubProcess, name: str) -> None:
    granted = token(subscribe=["*"])
    with subscribe(hub, [("match", "urn:q"), (name, granted)]) as sub:
        assert sub.status == 400
        challenge = sub.headers["www-authenticate"]
        assert 'error="invalid_request"' in challenge
        assert b"no token in the query string" in sub.body


def test_rfc6750_errors(hub: HubProcess) -> None:
    location = "https://hub.example" + METADATA
    closed = start_hub("--no-demo", "--heartbeat", "0", "--resource", RESOURCE)
    try:
        with subscribe(closed, [("match", "urn:x")]) as sub:  # no token, none anonymous
            assert sub.status == 401
            assert sub.headers["www-authenticate"] == (
                f'Bearer realm="ssehub", resource_metadata="{location}"'
            )
    finally:
        closed.stop()
    wrong_aud = token(subscribe=["*"], audience="https://other.example/.well-known/mercure")
    with subscribe(hub, [("match", "urn:x")], bearer(wrong_aud)) as sub:
        assert sub.status == 401
        challenge = sub.headers["www-authenticate"]
        assert 'error="invalid_token"' in challenge
        assert f'resource_metadata="{location}"' in challenge
    legacy = make_token(subscribe=["*"])  # a 0.x token on a 1.0 request
    with subscribe(hub, [("match", "urn:x")], bearer(legacy)) as sub:
        assert sub.status == 401
        assert b"at+jwt" in sub.body
    narrow = token(publish=["urn:mine"])
    r = hub.publish("urn:theirs", "x", token=narrow)
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert f'resource_metadata="{location}"' in r.headers["www-authenticate"]
    r = hub.publish(HUB + "/subscriptions/exact/a/b", "forged")
    assert r.status_code == 403
    assert "reserved namespace" in r.text
    # A 0.x client sees the challenge it always saw.
    r = httpx.post(hub.url, data={"topic": "t"})
    assert (r.status_code, r.headers["www-authenticate"]) == (401, 'Bearer realm="ssehub"')


def test_subscription_events_and_api(hub: HubProcess) -> None:
    family = "/.well-known/mercure/subscriptions/:match_type/:match/:subscriber"
    watch = token(subscribe=[("urlpattern", family)])
    with subscribe(hub, [("match_urlpattern", family)], bearer(watch)) as watcher:
        [own] = watcher.events(1)  # it is told of itself
        assert own.event == "mercure"
        assert json.loads(own.data)["match"] == family
        alice = token(subscribe=["urn:a"], payload={"user": "alice"})
        params = [("match", "urn:a"), ("match_urlpattern", "https://e.com/:id")]
        with subscribe(hub, params, bearer(alice)) as sub:
            assert sub.status == 200
            started = [json.loads(e.data) for e in watcher.events(2)]
            by_type = {d["match_type"]: d for d in started}
            assert by_type["exact"]["match"] == "urn:a"
            assert by_type["urlpattern"]["match"] == "https://e.com/:id"
            doc = by_type["exact"]
            subscriber = doc["subscriber"]
            assert doc["id"] == f"{API}/exact/urn%3Aa/{quote(subscriber, safe='')}"
            assert (doc["type"], doc["active"], doc["payload"]) == (
                "Subscription",
                True,
                {"user": "alice"},
            )
            assert "@context" not in doc

            reader = token(subscribe=[("urlpattern", "/.well-known/mercure/subscriptions{/*}?")])
            r = httpx.get(hub.base + API, headers=bearer(reader))
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/json"
            listing = r.json()
            assert listing["type"] == "Subscriptions" and "last_event_id" in listing
            assert {(s["match_type"], s["match"]) for s in listing["subscriptions"]} >= {
                ("exact", "urn:a"),
                ("urlpattern", "https://e.com/:id"),
            }
            one = httpx.get(hub.base + doc["id"], headers=bearer(reader))
            assert one.status_code == 200
            assert one.json()["subscriber"] == subscriber
            denied = httpx.get(hub.base + doc["id"], headers=bearer(token(subscribe=["urn:a"])))
            assert denied.status_code == 403
        [ended] = watcher.events(1)
        assert ended.event == "mercure"
        assert json.loads(ended.data)["active"] is False


def test_protected_resource_metadata(hub: HubProcess) -> None:
    r = httpx.get(hub.base + METADATA)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "resource": RESOURCE,
        "bearer_methods_supported": ["header"],
        "authorization_details_types_supported": ["https://mercure.rocks/authorization-detail"],
        "mercure_cookie": COOKIE,
    }


def test_resource_defaults_to_the_url_reached() -> None:
    """Without --resource, a token's aud is the hub's URL as the client reached it."""
    h = start_hub("--no-demo", "--heartbeat", "0")
    try:
        here = f"http://127.0.0.1:{h.port}{HUB}"
        with subscribe(h, [("match", "urn:x")], bearer(token(subscribe=["*"], audience=here))):
            pass
        sub = subscribe(h, [("match", "urn:x")], bearer(token(subscribe=["*"])))
        with sub:
            assert sub.status == 401
        r = httpx.get(h.base + METADATA)
        assert r.json()["resource"] == here
    finally:
        h.stop()


@pytest.mark.parametrize(
    ("dialects", "refused", "reason"),
    [
        ("0.x", [("match", "urn:x")], b"Mercure 1.0 subscriptions are turned off"),
        ("1.0", [("topic", "urn:x")], b"Mercure 0.x subscriptions are turned off"),
    ],
)
def test_dialect_setting(dialects: str, refused: list[tuple[str, str]], reason: bytes) -> None:
    h = start_hub("--no-demo", "--heartbeat", "0", "--anonymous", "--dialects", dialects)
    try:
        with subscribe(h, refused) as sub:
            assert sub.status == 400
            assert reason in sub.body
        allowed = [("topic" if dialects == "0.x" else "match", "urn:x")]
        with subscribe(h, allowed) as sub:
            assert sub.status == 200
        # A publisher token of the dialect turned off is refused with the reason too.
        here = f"http://127.0.0.1:{h.port}{HUB}"
        off = make_token(publish=["*"]) if dialects == "1.0" else token(["*"], audience=here)
        r = h.publish("urn:x", "x", token=off)
        assert r.status_code == 401
        assert "turned off on this hub" in r.text
        on = token(["*"], audience=here) if dialects == "1.0" else make_token(publish=["*"])
        assert h.publish("urn:x", "x", token=on).status_code == 200
        metadata = httpx.get(h.base + METADATA)
        assert metadata.status_code == (200 if dialects == "1.0" else 404)
    finally:
        h.stop()


def test_0x_unchanged_beside_1x(hub: HubProcess) -> None:
    """A 0.x subscriber on the same hub: topic=, URI templates, Last-Event-ID header."""
    legacy = make_token(publish=["*"])
    with (
        hub.subscribe("https://e.com/books/{id}") as old,
        subscribe(hub, [("match_urlpattern", "https://e.com/books/:id")]) as new,
    ):
        sent = hub.publish("https://e.com/books/1", "both", token=legacy).text
        old.next_is(sent)
        new.next_is(sent)
    with hub.subscribe("https://e.com/books/{id}", last_event_id=sent) as old:
        assert old.headers["last-event-id"] == sent
        assert "mercure-last-event-id" not in old.headers


def test_cli_mints_access_tokens(hub: HubProcess) -> None:
    def mint(*args: str) -> str:
        cmd = [sys.executable, "-m", "ssehub.cli", "token", "--key", KEY, *args]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()

    reader = mint("--audience", RESOURCE, "--subscribe-urlpattern", "https://e.com/cli/:id")
    publisher = mint("--audience", RESOURCE, "--publish", "https://e.com/cli/1")
    with subscribe(hub, [("match", "https://e.com/cli/1")], bearer(reader)) as sub:
        assert sub.status == 200, sub.body
        sent = hub.publish("https://e.com/cli/1", "private", token=publisher, private="on")
        assert sent.status_code == 200, sent.text
        sub.next_is(sent.text)
    refused = subprocess.run(
        [sys.executable, "-m", "ssehub.cli", "token", "--key", KEY, "--publish-urlpattern", "x"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "give --audience too" in refused.stderr


def test_asgi_face_speaks_1x() -> None:
    """The ASGI face applies the same dialect rules: a FastAPI app with the hub mounted."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "tests.asgi_app:app", "--port", str(port)]
    h = serve_process(
        [*cmd, "--log-level", "warning"], port, {**os.environ, "SSEHUB_TEST_KEY": KEY}
    )
    try:
        here = f"http://127.0.0.1:{port}{HUB}"  # no --resource: the URL the client reached
        publisher = token(publish=["*"], audience=here)
        first = h.publish("urn:asgi", "1", token=publisher, id="asgi-1").text
        second = h.publish("urn:asgi", "2", token=publisher, id="asgi-2").text
        assert (first, second) == ("asgi-1", "asgi-2")
        with subscribe(h, [("match", "urn:asgi"), ("last_event_id", "asgi-1")]) as sub:
            assert sub.status == 200, sub.body
            assert sub.headers["mercure-last-event-id"] == "asgi-1"
            sub.next_is("asgi-2")
        with subscribe(h, [("match", "urn:asgi"), ("access_token", publisher)]) as sub:
            assert sub.status == 400
            assert 'error="invalid_request"' in sub.headers["www-authenticate"]
    finally:
        h.stop()
