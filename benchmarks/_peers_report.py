"""What benchmarks/peers.py measures and how it reports it: the workloads, the servers' names,
one measured row (kept as JSON so the docs can be rewritten without measuring again), the
table and the latency CDF plots in docs/benchmarks.md and docs/img/."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssehub import bench

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"
BEGIN, END = "<!-- PEERS:BEGIN (written by benchmarks/peers.py) -->", "<!-- PEERS:END -->"
CDF_POINTS = 1000  # quantiles kept per row for the plots (every sample would be megabytes)


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    subscribers: int
    rate: float  # events/s; 0: as fast as the server acknowledges
    target: str = ""  # issue #12's target for ssehub, if it sets one
    target_p99_ms: float | None = None  # checked, and drawn on the chart
    min_deliveries: float | None = None  # deliveries/s the target asks for
    max_rss_bytes: float | None = None  # whole RSS per subscriber the target allows
    max_connect_s: float | None = None  # seconds to connect every subscriber
    idle: bool = False  # about connecting and memory: a short window at a low rate
    plot: bool = False  # gets a latency CDF chart
    window: int | None = None  # publishes in flight per connection, if not the command's
    conns: int | None = None  # publisher connections, if not the command's

    def shortfalls(self, row: Row) -> list[str]:
        """What ``row`` misses of this workload's target (empty: met)."""
        r, out = row.result, []
        if self.target and r.delivery_ratio < 0.99995:
            out.append(f"ratio {r.delivery_ratio:.4f}")
        if self.target_p99_ms is not None and r.latency_ms["p99"] > self.target_p99_ms:
            out.append(f"p99 {r.latency_ms['p99']:.1f} ms")
        if self.min_deliveries is not None and r.deliveries_per_s < self.min_deliveries:
            out.append(f"{r.deliveries_per_s:,.0f} deliveries/s")
        if self.max_rss_bytes is not None and r.hub_rss_per_sub_bytes > self.max_rss_bytes:
            out.append(f"{r.hub_rss_per_sub_bytes:,.0f} B each")
        if self.max_connect_s is not None and r.subscribers / r.connect_per_s > self.max_connect_s:
            out.append(f"connected in {r.subscribers / r.connect_per_s:.1f} s")
        return out

    def achieved(self, row: Row) -> str:
        """The figures the target is about, as measured in ``row``."""
        r = row.result
        if self.idle:
            return (
                f"{r.hub_rss_per_sub_bytes:,.0f} B each, "
                f"connected in {r.subscribers / r.connect_per_s:.1f} s"
            )
        rate = f"{r.deliveries_per_s / 1e6:.1f}M/s at " if self.min_deliveries else ""
        return f"{rate}p99 {r.latency_ms['p99']:.1f} ms"


WORKLOADS = (
    Workload(
        "1k-1000",
        "1,000 subscribers, 1,000 events/s",
        1000,
        1000.0,
        "p99 ≤ 5 ms, every event delivered",
        5.0,
        plot=True,
    ),
    Workload(
        "10k-100", "10,000 subscribers, 100 events/s", 10_000, 100.0, "p99 ≤ 60 ms", 60.0, plot=True
    ),
    Workload(
        "10k-max",
        "10,000 subscribers, as fast as answered (4 publishes in flight)",
        10_000,
        0.0,
        "≥ 1,000,000 deliveries/s with p99 ≤ 100 ms",
        100.0,
        min_deliveries=1e6,
        plot=True,
        # A deep window measures the publisher's own queue (256 in flight at ~1,000/s is a
        # quarter of a second before the hub reads the last), not the fan-out.
        window=4,
        conns=1,
    ),
    Workload(
        "idle-19500",
        "19,500 idle subscribers (10 events/s)",
        19_500,
        10.0,
        "≤ 5 KB RSS each, all connected within 3 s",
        max_rss_bytes=5000,
        max_connect_s=3.0,
        idle=True,
    ),
    Workload("1k-max", "1,000 subscribers, as fast as possible", 1000, 0.0),
    Workload("100-max", "100 subscribers, as fast as possible", 100, 0.0),
)
WORKLOAD = {w.key: w for w in WORKLOADS}
SERVERS = {  # key: label, in table order
    "ssehub": "ssehub (memory, HTTP/1.1)",
    "ssehub-h2": "ssehub (memory, HTTP/2 h2c)",
    "ssehub-sqlite": "ssehub (SQLite, HTTP/1.1)",
    "ssehub-sqlite-h2": "ssehub (SQLite, HTTP/2 h2c)",
    "ssehub-redis": "ssehub (Redis, HTTP/1.1)",
    "ssehub-redis-h2": "ssehub (Redis, HTTP/2 h2c)",
    "nchan": "nginx + nchan",
    "node": "Node http + EventEmitter",
    "starlette": "sse-starlette + uvicorn",
}
SSEHUB = tuple(key for key in SERVERS if key.startswith("ssehub"))  # the targets are for these


@dataclass
class Row:
    """One server under one workload: bench's result plus what peers.py measured around it."""

    server: str
    workload: str
    result: bench.Result  # latency_samples emptied; ``cdf`` keeps their shape
    cdf: list[float]
    rss_before_kib: int  # the server's RSS before any subscriber connected
    connect_s: float  # the span the two CPU readings below cover (bench's connect time + ~0.1 s)
    connect_server_cpu_pct: float  # over connect_s: which side limited the connect rate
    connect_load_cpu_pct: float  # the subscriber processes, summed
    redis_cpu_pct: float | None  # redis-server over the measured window (Redis store only)
    reader: str
    when: str
    loadavg: str
    command: str
    options: dict[str, Any] = field(default_factory=dict)  # bench.Options of the run
    machine: dict[str, str] = field(default_factory=dict)

    @property
    def rss_delta_per_sub(self) -> float:
        return (self.result.hub_rss_kib - self.rss_before_kib) * 1024 / self.result.subscribers

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        del out["result"]["latency_samples"]
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Row:
        raw = dict(raw)
        raw["result"] = bench.Result(**raw["result"])
        return cls(**raw)


def quantiles(samples: list[float]) -> list[float]:
    """CDF_POINTS + 1 evenly ranked quantiles (the first is the minimum, the last the maximum)."""
    ordered = sorted(samples)
    if not ordered:
        return []
    n = len(ordered)
    picks = [ordered[min(n - 1, k * n // CDF_POINTS)] for k in range(CDF_POINTS)]
    return [float(f"{x:.4g}") for x in [*picks, ordered[-1]]]


@dataclass
class Floor:
    """``benchmarks/write_floor.py`` in a run: raw ``os.write`` to loopback sockets, no server."""

    sockets: int
    us_per_write: float
    when: str

    @property
    def pass_ms(self) -> float:
        return self.sockets * self.us_per_write / 1000


def load_rows(path: Path) -> dict[tuple[str, str], Row]:
    if not path.exists():
        return {}
    rows = [Row.from_json(r) for r in json.loads(path.read_text())["rows"]]
    return {(r.server, r.workload): r for r in rows}


def load_floors(path: Path) -> dict[int, Floor]:
    if not path.exists():
        return {}
    floors = [Floor(**f) for f in json.loads(path.read_text()).get("floors", [])]
    return {f.sockets: f for f in floors}


def save_rows(
    path: Path, rows: dict[tuple[str, str], Row], floors: dict[int, Floor] | None = None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows.values(), key=_order)
    kept = sorted((floors or {}).values(), key=lambda f: f.sockets)
    floor_lines = ",\n".join(json.dumps(dataclasses.asdict(f)) for f in kept)
    lines = ",\n".join(json.dumps(r.to_json(), ensure_ascii=False) for r in ordered)
    # A row a line: reruns diff by row.
    path.write_text('{"floors": [\n' + floor_lines + '\n],\n"rows": [\n' + lines + "\n]}\n")


def _order(row: Row) -> tuple[int, int]:
    workloads, servers = list(WORKLOAD), list(SERVERS)
    return (
        workloads.index(row.workload) if row.workload in WORKLOAD else len(workloads),
        servers.index(row.server) if row.server in SERVERS else len(servers),
    )


# -- the docs ------------------------------------------------------------------------------------


def _cells(row: Row) -> list[str]:
    r, w = row.result, WORKLOAD[row.workload]
    lat = r.latency_ms
    latency = " / ".join(f"{lat[k]:.1f}" for k in ("p50", "p90", "p99", "max"))
    cpu = f"{r.hub_cpu_pct:.0f} %"
    if row.redis_cpu_pct is not None:
        cpu += f" + Redis {row.redis_cpu_pct:.0f} %"
    load = f"{r.load_cpu_pct:.0f} %" + (" **saturated**" if r.saturated_load else "")
    connect = f"{r.connect_per_s:,.0f}"
    if w.idle:
        connect += f" ({r.subscribers / r.connect_per_s:.1f} s)"
    return [
        w.title,
        SERVERS.get(row.server, row.server),
        f"{r.deliveries_per_s:,.0f}",
        f"{r.delivery_ratio:.4f}",
        f"{r.publishes_per_s:,.0f}",
        latency + (" (load saturated)" if r.saturated_load else ""),
        cpu,
        load,
        connect,
        f"{row.rss_delta_per_sub:,.0f} / {r.hub_rss_per_sub_bytes:,.0f}",
    ]


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| workload | server | delivered/s | ratio | published/s "
        "| latency ms p50 / p90 / p99 / max | server CPU | load CPU | connect/s "
        "| RSS B/subscriber (added / whole) |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in sorted(rows, key=_order)]
    return lines


def connect_notes(rows: list[Row]) -> list[str]:
    """How the client was checked while connecting: both sides' CPU over the connect time."""
    out = []
    for row in sorted(rows, key=_order):
        if WORKLOAD[row.workload].idle:
            out.append(
                f"- {SERVERS.get(row.server, row.server)}: {row.result.subscribers:,} connected in "
                f"{row.result.subscribers / row.result.connect_per_s:.2f} s; the server used "
                f"{row.connect_server_cpu_pct:.0f} % of its core and the load "
                f"{row.connect_load_cpu_pct:.0f} % of its own"
            )
    return out


def verdicts(rows: list[Row], floors: dict[int, Floor]) -> list[str]:
    """Each target of issue #12, which ssehub rows meet it and which miss it (and by what), and
    for the HTTP/1.1 ones the floor measured in the run: no server writing each subscriber
    over loopback HTTP/1.1 makes a pass shorter than it."""
    out = []
    for w in WORKLOADS:
        if not w.target:
            continue
        ours = sorted((r for r in rows if r.workload == w.key and r.server in SSEHUB), key=_order)
        met = [r for r in ours if not w.shortfalls(r)]
        missed = [r for r in ours if w.shortfalls(r)]
        line = f"- **{w.title}: {w.target}.**"
        if met:
            line += " Met by " + "; ".join(f"{SERVERS[r.server]} ({w.achieved(r)})" for r in met)
            line += "."
        if missed:
            line += " Missed by " + "; ".join(
                f"{SERVERS[r.server]} ({', '.join(w.shortfalls(r))})" for r in missed
            )
            line += "."
        floor = floors.get(w.subscribers)
        if floor is not None and not w.idle:
            line += (
                f" Raw `write()` floor in this run: {floor.us_per_write:.2f} µs x "
                f"{floor.sockets:,} sockets = {floor.pass_ms:.1f} ms a pass over HTTP/1.1."
            )
        out.append(line)
    return out


def ratios(rows: list[Row]) -> list[str]:
    out = []
    by = {(r.server, r.workload): r for r in rows}
    for w in WORKLOADS:
        ours = by.get(("ssehub", w.key))
        if ours is None or w.idle:
            continue
        peers = [by[s, w.key] for s in ("nchan", "node", "starlette") if (s, w.key) in by]
        parts = [
            f"{SERVERS[p.server]} {ours.result.deliveries_per_s / p.result.deliveries_per_s:.1f}x"
            for p in peers
            if p.result.deliveries_per_s
        ]
        if parts:
            out.append(f"- {w.title}: " + ", ".join(parts))
    return out


def plot_cdf(workload: Workload, rows: list[Row], path: Path) -> None:
    """Every server's latency CDF for one workload on one chart, log x, each p99 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for row in sorted(rows, key=_order):
        if not row.cdf:
            continue
        ys = [k / CDF_POINTS for k in range(len(row.cdf) - 1)] + [1.0]
        p99 = row.result.latency_ms["p99"]
        label = f"{SERVERS.get(row.server, row.server)}: p99 {p99:.1f} ms"
        if row.result.saturated_load:
            label += " (load saturated)"
        (line,) = ax.plot(row.cdf, ys, label=label)
        ax.plot([p99], [0.99], "o", color=line.get_color())
        ax.axvline(p99, color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.axhline(0.99, color="grey", linestyle="--", linewidth=0.6)
    if workload.target_p99_ms is not None:
        ax.axvline(workload.target_p99_ms, color="black", linewidth=1.2)
        ax.annotate(
            f"target p99 {workload.target_p99_ms:g} ms",
            (workload.target_p99_ms, 0.5),
            rotation=90,
            fontsize=7,
            xytext=(3, 0),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of samples")
    title = f"{workload.title}: latency CDF"
    ax.set_title(title + (f" (target {workload.target})" if workload.target else ""), fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _runs(rows: list[Row]) -> list[str]:
    runs: dict[str, list[Row]] = {}
    for row in rows:
        runs.setdefault(row.command, []).append(row)
    out = []
    for command, group in runs.items():
        whens = sorted(r.when for r in group)
        loads = sorted(float(r.loadavg.split(" / ")[0]) for r in group)
        span = whens[0] if whens[0] == whens[-1] else f"{whens[0]} to {whens[-1]}"
        readers = ", ".join(sorted({r.reader for r in group}))
        procs = ", ".join(sorted({str(r.options.get("client_procs", 1)) for r in group}))
        out += [
            f"    {command}",
            "",
            f"({len(group)} row{'s' if len(group) > 1 else ''}, {span}; 1-minute load average "
            f"{loads[0]:.2f} to {loads[-1]:.2f} as rows began; subscriber processes: {procs}, "
            f"reader: {readers})",
            "",
        ]
    return out


def _queueing(rows: list[Row]) -> str:
    """What the publisher's window does to the latency of the as-fast-as-possible rows."""
    windows = sorted(
        {r.options["window"] * r.options["conns"] for r in rows if r.options and not r.result.rate}
    )
    if not windows:
        return ""
    inflight = " or ".join(f"{w:,}" for w in windows)
    return (
        f"As fast as possible means {inflight} publishes in flight (a window per publisher "
        "connection): a new event waits behind those already queued, so these rows' latency is "
        "at least in-flight / published per second (Little's law) whatever the server; "
        "`--window` and `--conns` make it smaller."
    )


def write_docs(rows: list[Row], floors: dict[int, Floor], doc: Path = DOC, img: Path = IMG) -> None:
    """The PEERS section of docs/benchmarks.md and one CDF chart per latency workload."""
    img.mkdir(parents=True, exist_ok=True)
    machine = next((r.machine for r in rows if r.machine), {})
    charts = []
    for w in WORKLOADS:
        measured = [r for r in rows if r.workload == w.key]
        if w.plot and any(r.cdf for r in measured):
            name = f"peers-cdf-{w.key}.png"
            plot_cdf(w, measured, img / name)
            charts.append(f"![{w.title}: latency CDF](img/{name})")
    section = [
        BEGIN,
        *_runs(rows),
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + ".",
        "Each server pinned to CPU 0, the load (`ssehub.bench`: subscriber processes and the "
        "publisher) to CPU 1; a fresh server for every row. Rewrite this section from the kept "
        "results without measuring: `python benchmarks/peers.py --from-json docs/data/peers.json`.",
        "",
        *table(rows),
        "",
        "RSS per subscriber: *added* is (server RSS with every subscriber connected - its RSS "
        "before the first connected) / subscribers; *whole* is the server's whole RSS / "
        "subscribers (VmRSS summed over its processes: nginx's master and worker, ssehub's "
        "workers). **saturated**: the load process used over 90 % of its core, so the "
        "latencies include its own backlog and the server may go faster.",
        "",
        _queueing(rows),
        "",
        "Issue #12's targets, row by row (for ssehub):",
        "",
        *verdicts(rows, floors),
        "",
        "Connecting the idle subscribers, with both sides' CPU (a server near 100 % is the limit; "
        "a load near 100 % means the client was):",
        "",
        *connect_notes(rows),
        "",
        "ssehub's (memory, HTTP/1.1) deliveries/s against each peer's:",
        "",
        *ratios(rows),
        "",
        *[line for chart in charts for line in (chart, "")],
        END,
    ]
    text = doc.read_text()
    begin, end = text.find(BEGIN.split(" (")[0]), text.find(END)
    body = "\n".join(section)
    if begin >= 0 and end >= 0:
        text = text[:begin] + body + text[end + len(END) :]
    else:
        text += "\n## Against the peers\n\n" + body + "\n"
    doc.write_text(text)
