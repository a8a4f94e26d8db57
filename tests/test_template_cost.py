"""What anonymous subscribers' long URI templates cost each publish to a new topic."""

from __future__ import annotations

import time

from .support import SSEClient, start_hub

STREAMS = 40
ROUNDS = 5


def hostile(stream: int, k: int) -> str:
    """~1,900 characters, 8 expressions; literals of one character occur almost everywhere
    in the topics published (as benchmarks/template_cost.py)."""
    literal = "a" * (100 + stream * 4 + k)
    return "urn:{+v}" + "".join(f"{literal}{{+w{i}}}" for i in range(7))


def test_long_templates_cost_each_new_topic_a_bounded_multiple_of_none() -> None:
    """Publishes to new topics, each seen by a subscriber: with 40 streams x 4 long templates
    they took ~40x as long as without over HTTP (a literal cost one Python step per place it occurs
    in the topic: 1.5 s a publish); the ratio is measured in one run, with a wide margin."""
    hub = start_hub(
        *("--anonymous", "--no-demo", "--heartbeat", "0"),
        *("--max-template-expressions-per-address", str(STREAMS * 32 + 1)),
    )
    watcher: SSEClient | None = None
    streams: list[SSEClient] = []
    try:
        watcher = hub.subscribe("urn:{+v}")

        def rounds(tag: str) -> float:
            assert watcher is not None
            start = time.perf_counter()
            for i in range(ROUNDS):
                assert hub.publish(f"urn:{tag}{i}:" + "a" * 2000, "x").status_code == 200
                watcher.events(1, timeout=60)
            return time.perf_counter() - start

        rounds("warm")
        bare = rounds("bare")
        for stream in range(STREAMS):
            streams.append(hub.subscribe([hostile(stream, k) for k in range(4)]))
            assert streams[-1].status == 200
        costly = rounds("costly")
        assert costly < bare * 10, (
            f"{costly / ROUNDS * 1e3:.0f} ms a publish, {bare / ROUNDS * 1e3:.1f} without"
        )
    finally:
        for client in [*streams, *([watcher] if watcher else [])]:
            client.close()
        hub.stop()
