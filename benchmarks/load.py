"""Fan-out load with the hub pinned: starts ``ssehub serve`` (or the ASGI app under uvicorn) on
one core and runs ``ssehub.bench`` on another, so the numbers say what one core of hub does.

    python benchmarks/load.py --subscribers 1000 --duration 10 [--rate 1000] [--store S]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import jwt
import uvloop
from _common import KEY, SERVE_ARGS, free_port, hub_pids, start_hub, stop_hub, wait_port

from ssehub import bench

TOPIC = "urn:bench:fanout"


def launch_asgi(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    """The same hub as an ASGI app under uvicorn (httptools, uvloop), to measure the face."""
    env = {
        **os.environ,
        "SSEHUB_JWT_KEY": KEY,
        "SSEHUB_ANONYMOUS": "1",
        "SSEHUB_HEARTBEAT": "0",
        "SSEHUB_HISTORY_SIZE": "1000",
        "SSEHUB_MAX_WRITE_BUFFER": str(64 << 20),
        "SSEHUB_STORE": args.store,
    }
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "ssehub.asgi:from_env",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--backlog",
        "4096",
    ]
    cmd = ["taskset", "-c", str(args.hub_cpu), *uvicorn] if args.hub_cpu is not None else uvicorn
    hub = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, hub)
    return hub


def launch(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    if args.face == "asgi":
        return launch_asgi(args, port)
    serve = [
        *SERVE_ARGS,
        "--store",
        args.store,
        "--workers",
        str(args.workers),
        *args.hub_arg,
    ]
    cpus = None
    if args.hub_cpu is not None:
        cpus = str(args.hub_cpu) if args.workers == 1 else f"{args.hub_cpu},{args.load_cpu}"
    return start_hub(port, serve, cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--payload", type=int, default=100, help="bytes of data per event")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0: as fast as acks")
    parser.add_argument("--window", type=int, default=64, help="requests in flight per conn")
    parser.add_argument("--conns", type=int, default=4, help="publisher connections")
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--hub-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--store", default="memory")
    parser.add_argument(
        "--face",
        choices=["server", "asgi"],
        default="server",
        help="the standalone server, or the ASGI app under uvicorn",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--hub-arg", action="append", default=[], help="extra serve argument")
    parser.add_argument(
        "--http",
        choices=["1.0", "1.1", "2"],
        default="1.1",
        help="subscribers' protocol: 1.1 (chunked), 1.0 (close-delimited), 2 (h2c, --http2)",
    )
    parser.add_argument("--streams", type=int, default=100, help="HTTP/2 streams per connection")
    parser.add_argument(
        "--reader",
        choices=["auto", "c", "python"],
        default="auto",
        help="subscribers' reader: c (built with $CC or cc), python, auto (c when it builds)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.http == "2" and args.face == "server":
        args.hub_arg.append("--http2")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {args.load_cpu})
    port = free_port()
    hub = launch(args, port)
    try:
        token = jwt.encode({"mercure": {"publish": ["*"]}}, KEY, algorithm="HS256")
        target = bench.Target.mercure(
            f"http://127.0.0.1:{port}/.well-known/mercure", TOPIC, token, tuple(hub_pids(hub.pid))
        )
        options = bench.Options(
            args.subscribers,
            args.client_procs,
            args.rate,
            args.window,
            args.conns,
            args.payload,
            args.duration,
            args.warmup,
            args.load_cpu,
            args.http,
            args.streams,
            args.reader,
        )
        result = uvloop.run(bench.run(target, options))
    finally:
        stop_hub(hub)
    print(f"store {args.store}, workers {args.workers}, face {args.face}")
    print(bench.report(result))
    if args.json:
        row = {k: v for k, v in dataclasses.asdict(result).items() if k != "latency_samples"}
        row.update(store=args.store, workers=args.workers, face=args.face)
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
