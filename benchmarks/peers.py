"""ssehub against its peers, the same workloads one after the other, in one run.

Peers: nginx + nchan (C), Node's http + EventEmitter (the classic tutorial server), and
sse-starlette under uvicorn with a queue per subscriber. Each server runs pinned to CPU 0, the
load (``ssehub.bench``, raw mode for the peers) to CPU 1. It installs what is missing (Debian's
nginx-light and libnginx-mod-nchan, Node), writes the table and the plots into
docs/benchmarks.md (between the PEERS markers) and docs/img/.

    python benchmarks/peers.py [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import jwt
from _common import KEY, SERVE_ARGS, free_port, hub_pids, start_hub, stop_hub, wait_port

from ssehub import bench

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "peers"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"

WORKLOADS = [  # (name, subscribers, rate)
    ("1,000 subscribers, as fast as possible", 1000, 0.0),
    ("1,000 subscribers, 1,000 events/s", 1000, 1000.0),
    ("100 subscribers, as fast as possible", 100, 0.0),
]


def ensure_installed() -> None:
    missing = []
    if not shutil.which("nginx") or not Path(NCHAN_MODULE).exists():
        missing += ["nginx-light", "libnginx-mod-nchan"]
    if not shutil.which("node"):
        missing.append("nodejs")
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
        subprocess.run(["pkill", "-x", "nginx"], check=False)  # the package starts one


Server = tuple[subprocess.Popen[bytes], bench.Target]


def start_ssehub(port: int) -> Server:
    hub = start_hub(port, SERVE_ARGS, "0")
    token = jwt.encode({"mercure": {"publish": ["*"]}}, KEY, algorithm="HS256")
    target = bench.Target.mercure(
        f"http://127.0.0.1:{port}/.well-known/mercure",
        "urn:bench:peers",
        token,
        tuple(hub_pids(hub.pid)),
    )
    return hub, target


def start_nchan(port: int, tmp: Path) -> Server:
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
load_module {NCHAN_MODULE};
worker_processes 1;
worker_rlimit_nofile 40000;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 30000; }}
http {{
  access_log off;
  keepalive_requests 10000000;  # the default (1000) would close our publisher connections
  client_body_temp_path {tmp}/body;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /sub {{ nchan_subscriber eventsource; nchan_channel_id bench; }}
    location = /pub {{ nchan_publisher; nchan_channel_id bench;
                       nchan_message_buffer_length 1000; }}
  }}
}}
""")
    proc = subprocess.Popen(
        ["taskset", "-c", "0", "nginx", "-c", str(conf), "-p", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    base = f"http://127.0.0.1:{port}"
    return proc, bench.Target.raw(f"{base}/sub", f"{base}/pub", (proc.pid, *hub_pids(proc.pid)[1:]))


def start_node(port: int, tmp: Path) -> Server:
    proc = subprocess.Popen(
        ["taskset", "-c", "0", "node", str(HERE / "node_server.js"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    base = f"http://127.0.0.1:{port}"
    return proc, bench.Target.raw(f"{base}/events", f"{base}/publish", (proc.pid,))


def start_starlette(port: int, tmp: Path) -> Server:
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, str(HERE / "starlette_server.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    base = f"http://127.0.0.1:{port}"
    return proc, bench.Target.raw(f"{base}/events", f"{base}/publish", (proc.pid,))


SERVERS: list[tuple[str, Callable[[int, Path], Server]]] = [
    ("ssehub", lambda port, tmp: start_ssehub(port)),
    ("nginx + nchan", start_nchan),
    ("Node http + EventEmitter", start_node),
    ("sse-starlette + uvicorn", start_starlette),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=Path("/tmp/ssehub-peers.json"))
    args = parser.parse_args()
    ensure_installed()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {1})
    results: dict[str, dict[str, bench.Result]] = {}
    for server, start in SERVERS:
        results[server] = {}
        for name, subscribers, rate in WORKLOADS:
            with tempfile.TemporaryDirectory() as tmp:
                port = free_port()
                proc, target = start(port, Path(tmp))
                try:
                    options = bench.Options(subscribers, 1, rate, 64, 4, 100, args.duration, 1.0, 1)
                    result = asyncio.run(bench.run(target, options))
                finally:
                    stop_hub(proc)
            results[server][name] = result
            print(f"== {server}: {name}\n{bench.report(result)}", flush=True)
    args.json.write_text(
        json.dumps(
            {
                s: {
                    n: {k: v for k, v in dataclasses.asdict(r).items() if k != "latency_samples"}
                    for n, r in rows.items()
                }
                for s, rows in results.items()
            },
            indent=2,
        )
    )
    write_docs(results)


def write_docs(results: dict[str, dict[str, bench.Result]]) -> None:
    img = ROOT / "docs" / "img"
    img.mkdir(parents=True, exist_ok=True)
    lines = [
        "| workload | server | delivered/s | ratio | published/s | latency p50 / p99 ms "
        "| server CPU | load CPU |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for name, _, rate in WORKLOADS:
        for server, rows in results.items():
            r = rows[name]
            lat = r.latency_ms
            latency = f"{lat['p50']:.1f} / {lat['p99']:.1f}" if rate else "(saturated)"
            lines.append(
                f"| {name} | {server} | {r.deliveries_per_s:,.0f} | "
                f"{r.delivery_ratio:.4f} | {r.publishes_per_s:,.0f} | {latency} | "
                f"{r.hub_cpu_pct:.0f} % | {r.load_cpu_pct:.0f} % |"
            )
    ratios = ["", "ssehub's deliveries/s against each peer's, per workload:", ""]
    for name, _, _ in WORKLOADS:
        ours = results["ssehub"][name].deliveries_per_s
        parts = [
            f"{server}: {ours / rows[name].deliveries_per_s:.1f}x"
            for server, rows in results.items()
            if server != "ssehub" and rows[name].deliveries_per_s
        ]
        ratios.append(f"- {name}: " + ", ".join(parts))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for server, rows in results.items():
        samples = sorted(rows[WORKLOADS[1][0]].latency_samples)
        if samples:
            ax.plot(samples, [i / len(samples) for i in range(1, len(samples) + 1)], label=server)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of samples")
    ax.set_title("1,000 subscribers at 1,000 events/s: latency CDF")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img / "peers-latency.png", dpi=110)
    plt.close(fig)
    section = "\n".join(
        [
            "<!-- PEERS:BEGIN (written by benchmarks/peers.py) -->",
            "    python benchmarks/peers.py --duration 8",
            "",
            *lines,
            *ratios,
            "",
            "![latency CDF at 1,000 events/s](img/peers-latency.png)",
            "<!-- PEERS:END -->",
        ]
    )
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    begin, end = text.find("<!-- PEERS:BEGIN"), text.find("<!-- PEERS:END -->")
    if begin >= 0 and end >= 0:
        text = text[:begin] + section + text[end + len("<!-- PEERS:END -->") :]
    else:
        text += "\n## Against the peers\n\n" + section + "\n"
    doc.write_text(text)


if __name__ == "__main__":
    main()
