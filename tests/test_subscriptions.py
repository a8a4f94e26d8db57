"""Mercure's active subscriptions: events on connect and disconnect, and the JSON-LD API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import jwt
import pytest

from .support import KEY, HubProcess, start_hub

API = "/.well-known/mercure/subscriptions"


@pytest.fixture(scope="module")
def hub_with_api() -> Iterator[HubProcess]:
    h = start_hub("--no-demo", "--heartbeat", "0", "--subscriptions")
    yield h
    h.stop()


def token(subscribe: list[str], payload: object = None) -> str:
    mercure: dict[str, object] = {"subscribe": subscribe}
    if payload is not None:
        mercure["payload"] = payload
    return jwt.encode({"mercure": mercure}, KEY, algorithm="HS256")


def get(hub: HubProcess, path: str, bearer: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.get(hub.base + path, headers=headers)


def test_events_and_api_follow_a_subscriber(hub_with_api: HubProcess) -> None:
    hub = hub_with_api
    watch = token([API + "/{topic}/{subscriber}"])
    reader = token([API + "{/topic}{/subscriber}"])
    with hub.subscribe(API + "/{topic}/{subscriber}", token=watch) as watcher:
        [own] = [json.loads(e.data) for e in watcher.events(1)]  # it sees itself arrive
        assert own["topic"] == API + "/{topic}/{subscriber}"
        alice = token(["urn:a"], payload={"user": "alice"})
        with hub.subscribe(["urn:a", "urn:b"], token=alice) as sub:
            assert sub.status == 200
            started = [json.loads(e.data) for e in watcher.events(2)]
            assert {d["topic"] for d in started} == {"urn:a", "urn:b"}
            assert all(d["active"] is True for d in started)
            assert all(d["type"] == "Subscription" for d in started)
            assert all(d["payload"] == {"user": "alice"} for d in started)
            subscriber = started[0]["subscriber"]
            assert subscriber.startswith("urn:uuid:")
            assert started[0]["id"] == f"{API}/{quote(started[0]['topic'], safe='')}/" + quote(
                subscriber, safe=""
            )

            everything = get(hub, API, reader)
            assert everything.status_code == 200
            assert everything.headers["content-type"] == "application/ld+json"
            doc = everything.json()
            assert doc["type"] == "Subscriptions"
            assert doc["@context"] == "https://mercure.rocks/"
            assert doc["lastEventID"] != "earliest"
            mine = [s for s in doc["subscriptions"] if s["subscriber"] == subscriber]
            assert {s["topic"] for s in mine} == {"urn:a", "urn:b"}

            by_topic = get(hub, f"{API}/{quote('urn:a', safe='')}", reader).json()
            assert {s["topic"] for s in by_topic["subscriptions"]} == {"urn:a"}
            single_path = f"{API}/{quote('urn:b', safe='')}/{quote(subscriber, safe='')}"
            single = get(hub, single_path, reader)
            assert single.status_code == 200
            assert single.json()["topic"] == "urn:b"
            assert "lastEventID" in single.json()
        ended = [json.loads(e.data) for e in watcher.events(2)]
        assert all(d["active"] is False and d["subscriber"] == subscriber for d in ended)
    assert get(hub, single_path, reader).status_code == 404


def test_api_needs_matching_claims(hub_with_api: HubProcess) -> None:
    assert get(hub_with_api, API, None).status_code == 401
    narrow = get(hub_with_api, API, token(["urn:something-else"]))
    assert narrow.status_code == 403
    assert API in narrow.text
