"""What a load run is asked and what it measured: targets, options, results, the report
and the plot; and the /proc readings they use."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit


class BenchError(Exception):
    """The load cannot run: the target refused or did not answer (one line, for the CLI)."""


@dataclass(frozen=True)
class Target:
    """Where to subscribe and publish. ``publish_body`` turns a payload into a request body."""

    host: str
    port: int
    subscribe_path: str
    publish_path: str
    publish_body: Callable[[bytes], bytes]
    content_type: str
    token: str | None = None
    hub_pids: tuple[int, ...] = ()

    @classmethod
    def mercure(cls, url: str, topic: str, token: str | None, pids: tuple[int, ...] = ()) -> Target:
        """A Mercure hub at ``url`` (…/.well-known/mercure)."""
        parts = urlsplit(url)
        prefix = b"topic=" + quote(topic, safe="").encode() + b"&data="
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            f"{parts.path}?topic={quote(topic, safe='')}",
            parts.path,
            lambda payload: prefix + payload,
            "application/x-www-form-urlencoded",
            token,
            pids,
        )

    @classmethod
    def raw(cls, subscribe_url: str, publish_url: str, pids: tuple[int, ...] = ()) -> Target:
        """Any SSE server: GET ``subscribe_url`` streams, POST ``publish_url`` (body = data)."""
        sub, pub = urlsplit(subscribe_url), urlsplit(publish_url)
        return cls(
            sub.hostname or "127.0.0.1",
            sub.port or 80,
            sub.path + (f"?{sub.query}" if sub.query else ""),
            pub.path + (f"?{pub.query}" if pub.query else ""),
            lambda payload: payload,
            "text/plain",
            None,
            pids,
        )


@dataclass
class Options:
    subscribers: int = 1000
    client_procs: int = 1
    rate: float = 0.0
    window: int = 64
    conns: int = 4
    payload: int = 100
    duration: float = 10.0
    warmup: float = 2.0
    load_cpu: int | None = None
    http: str = "1.1"  # the subscribers' protocol: "1.0", "1.1" or "2" (h2c)
    streams: int = 100  # HTTP/2: subscribers per connection
    reader: str = "auto"  # the subscriber processes: "c", "python", "auto" (c if it builds)


@dataclass
class Result:
    """What one run measured (``asdict`` gives the JSON)."""

    subscribers: int
    payload: int
    rate: float
    http: str = "1.1"
    window_s: float = 0.0
    published: int = 0
    publish_errors: int = 0
    publishes_per_s: float = 0.0
    delivered: int = 0
    deliveries_per_s: float = 0.0
    delivery_ratio: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_samples: list[float] = field(default_factory=list, repr=False)
    connect_per_s: float = 0.0
    hub_cpu_pct: float = 0.0
    hub_rss_kib: int = 0
    hub_rss_per_sub_bytes: float = 0.0
    load_cpu_pct: float = 0.0
    saturated_load: bool = False
    reader: str = ""  # which subscriber reader ran: "c" or "python"
    reader_note: str = ""  # why "auto" did not run the C reader


def proc_cpu_s(pids: tuple[int, ...] | list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_kib(pids: tuple[int, ...] | list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except FileNotFoundError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(result: Result) -> str:
    """The human summary of one run."""
    lat = result.latency_ms
    rate = "max" if not result.rate else f"{result.rate:g}/s"
    lines = [
        f"{result.subscribers} subscribers over HTTP/{result.http}, rate {rate}, "
        f"payload {result.payload} B",
        f"  published   {result.publishes_per_s:12,.0f} events/s  ({result.publish_errors} errors)",
        f"  delivered   {result.deliveries_per_s:12,.0f} events/s  "
        f"ratio {result.delivery_ratio:.4f}",
        f"  latency ms  p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
        f"max {lat['max']:.2f}",
        f"  connect     {result.connect_per_s:,.0f} subscribers/s",
    ]
    if result.hub_rss_kib:
        lines.append(
            f"  hub         cpu {result.hub_cpu_pct:.0f}%  rss {result.hub_rss_kib / 1024:.1f} MiB "
            f"({result.hub_rss_per_sub_bytes:,.0f} B/subscriber)"
        )
    reader = {"c": "C reader", "python": "Python reader"}.get(result.reader, result.reader)
    if result.reader_note:
        reader += f" ({result.reader_note})"
    lines.append(
        f"  load        cpu {result.load_cpu_pct:.0f}%, {reader}"
        + ("  (load generator saturated: the hub may go faster)" if result.saturated_load else "")
    )
    return "\n".join(lines)


def plot(results: list[Result], path: Path) -> None:
    """Latency CDF of each run, and delivered against offered rate when rates differ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, curve) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        samples = sorted(r.latency_samples)
        if samples:
            ys = [i / len(samples) for i in range(1, len(samples) + 1)]
            label = f"{r.subscribers} subs @ {'max' if not r.rate else f'{r.rate:g}/s'}"
            cdf.plot(samples, ys, label=label)
    cdf.set_xscale("log")
    cdf.set_xlabel("latency (ms)")
    cdf.set_ylabel("fraction of samples")
    cdf.set_title("Delivery latency CDF")
    cdf.legend(fontsize=8)
    offered = [r.rate * r.subscribers if r.rate else r.deliveries_per_s for r in results]
    curve.plot(offered, [r.deliveries_per_s for r in results], "o-")
    curve.plot(offered, offered, ":", color="grey", label="delivered = offered")
    curve.set_xlabel("offered deliveries/s (rate x subscribers)")
    curve.set_ylabel("delivered/s")
    curve.set_title("Throughput against offered load")
    curve.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
