"""Prometheus metrics, read from the hub's own counters when scraped: nothing on the hot path."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .hub import Hub

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _HubCollector(Collector):
    def __init__(self, hub: Hub, extra: Callable[[], Iterator[Metric]] | None) -> None:
        self.hub = hub
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        yield GaugeMetricFamily(
            "ssehub_subscribers", "Subscribers connected now.", value=hub.subscriber_count
        )
        counters = [
            ("ssehub_subscriptions", "Subscribers accepted since start.", hub.subscriptions_total),
            ("ssehub_updates_published", "Updates stored by the backend.", hub.commits.published),
            (
                "ssehub_updates_repeated",
                "Publishes of an id history already held (a retry): answered, not stored again.",
                hub.commits.repeated,
            ),
            (
                "ssehub_updates_failed",
                "Updates the backend refused (answered 503).",
                hub.commits.failures,
            ),
            (
                "ssehub_updates_busy",
                "Publishes refused while too much waited for the store (503 hub busy).",
                hub.commits.busy,
            ),
            ("ssehub_deliveries", "Events written to subscribers.", hub.fanout.deliveries),
            (
                "ssehub_bytes_written",
                "Bytes written to subscribers by fan-out.",
                hub.fanout.bytes_written,
            ),
            (
                "ssehub_slow_consumers_closed",
                "Subscribers closed for not keeping up.",
                hub.slow_dropped,
            ),
            (
                "ssehub_routes_computed",
                "Topic sets routed by trying every selector (route cache misses).",
                hub.routes.recomputed,
            ),
            (
                "ssehub_routes_not_cached",
                "Routes not cached: the cache was full and the topic set had missed under 3 times.",
                hub.routes.declined,
            ),
        ]
        for name, text, value in counters:
            yield CounterMetricFamily(name, text, value=value)
        yield GaugeMetricFamily(
            "ssehub_routes_cached",
            "Topic sets whose subscribers are cached.",
            value=len(hub.routes),
        )
        retained = getattr(hub.backend, "retained", None)
        if isinstance(retained, int):
            yield GaugeMetricFamily("ssehub_history_events", "Events in history.", value=retained)
        if self.extra is not None:
            yield from self.extra()


class Metrics:
    """One registry per hub (no global state: several hubs may share a process)."""

    def __init__(self, hub: Hub, extra: Callable[[], Iterator[Metric]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_HubCollector(hub, extra))
        append = Histogram(
            "ssehub_backend_append_seconds",
            "Time the backend took to accept one batch of publishes.",
            registry=self.registry,
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
        )
        hub.commits.on_append = append.observe
        rounds = Histogram(
            "ssehub_fanout_round_seconds",
            "Wall time of one fan-out round (every view's new bytes written to every member,"
            " in slices between reads): an event waits for about one round at most.",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        hub.fanout.on_round = rounds.observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
