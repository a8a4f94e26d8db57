"""/metrics moves as events flow; /healthz and /readyz answer."""

from __future__ import annotations

import httpx

from .support import HubProcess, scrape


def test_metrics_follow_traffic(hub: HubProcess) -> None:
    before = scrape(hub.base)
    with hub.subscribe("urn:metrics") as one, hub.subscribe("urn:metrics") as two:
        for i in range(3):
            assert hub.publish("urn:metrics", f"m{i}").status_code == 200
        one.events(3)
        two.events(3)
        during = scrape(hub.base)
        assert during[("ssehub_subscribers", ())] >= 2
    assert httpx.post(hub.url, data={"topic": "x"}).status_code == 401
    after = scrape(hub.base)

    def grew(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after[(name, labels)] - before.get((name, labels), 0.0)

    assert grew("ssehub_updates_published_total") == 3
    assert grew("ssehub_deliveries_total") == 6
    assert grew("ssehub_bytes_written_total") > 6 * len("data: m0\n\n")
    assert grew("ssehub_subscriptions_total") == 2
    assert grew("ssehub_auth_rejections_total", (("status", "401"),)) == 1
    assert after[("ssehub_history_events", ())] >= 3
    assert after[("ssehub_backend_append_seconds_count", ())] >= 1
    # Each publish reached two subscribers in at least one fan-out round (maybe one for all).
    assert grew("ssehub_fanout_round_seconds_count") >= 1
    assert grew("ssehub_fanout_round_seconds_sum") > 0
    assert after[("ssehub_connections", ())] >= 1


def test_health(hub: HubProcess) -> None:
    for path in ("/healthz", "/readyz"):
        answer = httpx.get(hub.base + path)
        assert (answer.status_code, answer.text) == (200, "ok\n")


def test_a_retried_publish_is_counted_once(hub: HubProcess) -> None:
    """A publisher's retry (an id history holds) is answered with the stored event; it is
    counted as a repeat, not as a second update."""
    before = scrape(hub.base)
    first = hub.publish("urn:metrics-retry", "once", id="retry-1")
    again = hub.publish("urn:metrics-retry", "once", id="retry-1")
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.text == again.text == "retry-1"
    after = scrape(hub.base)

    def grew(name: str) -> float:
        return after.get((name, ()), 0.0) - before.get((name, ()), 0.0)

    assert grew("ssehub_updates_published_total") == 1
    assert grew("ssehub_updates_repeated_total") == 1
