"""Mercure's active subscriptions: events on connect and disconnect, and the JSON-LD API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import jwt
import pytest

from ssehub import Hub, MemoryBackend
from ssehub.errors import HubError
from ssehub.subscriptions import Subscriptions

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

            last = hub.publish("urn:elsewhere", "stored").text
            everything = get(hub, API, reader)
            assert everything.status_code == 200
            assert everything.headers["content-type"] == "application/ld+json"
            doc = everything.json()
            assert doc["type"] == "Subscriptions"
            assert doc["@context"] == "https://mercure.rocks/"
            # Subscription events are live only: the resume point is the last stored event.
            assert doc["lastEventID"] == last
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


def metric(hub: HubProcess, name: str) -> float:
    for line in httpx.get(hub.base + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def test_subscription_churn_costs_other_topics_no_history() -> None:
    """Subscription events go live only: anonymous connect/disconnect churn once filled the
    shared history and evicted real events within a second."""
    hub = start_hub(
        "--no-demo", "--heartbeat", "0", "--subscriptions", "--anonymous", "--history-size", "5"
    )
    try:
        kept = [hub.publish("urn:kept", f"e{i}").text for i in range(3)]
        for _ in range(20):
            with hub.subscribe("urn:churn") as churn:
                assert churn.status == 200
        deadline = time.monotonic() + 10
        while metric(hub, "ssehub_subscribers") or metric(hub, "ssehub_subscriptions_total") < 20:
            assert time.monotonic() < deadline, "the churn's disconnects were never seen"
            time.sleep(0.02)
        with hub.subscribe("urn:kept", last_event_id=kept[0]) as sub:
            assert sub.headers["last-event-id"] == kept[0]  # still in history: no gap
            assert [e.id for e in sub.events(2)] == kept[1:]
        # A watcher of subscriptions still hears them, live.
        watch = token([API + "/{topic}/{subscriber}"])
        with (
            hub.subscribe(API + "/{topic}/{subscriber}", token=watch) as watcher,
            hub.subscribe("urn:churn"),
        ):
            seen = []  # its own arrival, perhaps the last reader's departure, then this one
            while ("urn:churn", True) not in seen:
                notice = json.loads(watcher.events(1)[0].data)
                seen.append((notice["topic"], notice["active"]))
    finally:
        hub.stop()


def test_lookups_read_what_they_name_and_collections_are_bounded() -> None:
    """A GET of one subscription reads that one (it used to build the list of every active
    subscription first); a collection lists ``max_listed`` at most and says how many more."""

    async def go() -> None:
        hub = Hub(MemoryBackend(history_size=10), heartbeat=0)
        await hub.start()
        api = Subscriptions(hub, max_listed=100)
        ids = [api.opened(("urn:a", f"urn:own:{i}"), None) for i in range(2000)]
        one = api.answer(f"{API}/{quote('urn:own:7', safe='')}/{quote(ids[7], safe='')}")
        assert (one["topic"], one["subscriber"]) == ("urn:own:7", ids[7])
        assert api.scanned == 1
        of_topic = api.answer(f"{API}/{quote('urn:a', safe='')}")
        listed = of_topic["subscriptions"]
        assert isinstance(listed, list) and len(listed) == 100
        assert of_topic["omitted"] == 1900
        everything = api.answer(API)
        assert len(everything["subscriptions"]) == 100  # type: ignore[arg-type]
        assert everything["omitted"] == 3900
        assert api.scanned == 201
        for subscriber in ids[:1990]:
            api.closed(subscriber)
        rest = api.answer(API)
        assert len(rest["subscriptions"]) == 20 and "omitted" not in rest  # type: ignore[arg-type]
        with pytest.raises(HubError):
            api.answer(f"{API}/{quote('urn:own:7', safe='')}/{quote(ids[7], safe='')}")
        await hub.close()

    asyncio.run(go())
