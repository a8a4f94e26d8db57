"""Fan-out load: N subscribers of one topic, a publisher at a fixed rate or as fast as acks come.

The hub runs pinned to one core (taskset), the load on another, so the numbers say what one
core of hub delivers. Payloads carry the publisher's monotonic send time, so the subscribers
measure delivery latency (one sample per received chunk: the oldest event in it). Publishing
happens only inside the measured window; afterwards the load waits for the last deliveries,
so the delivery ratio compares like with like.

    python benchmarks/load.py --subscribers 1000 --duration 10 --rate 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

import jwt
import uvloop
from _common import HUB_PATH, KEY, free_port, hub_pids, proc_cpu_s, rss_kib, start_hub, stop_hub

TOPIC = "urn:bench:fanout"


@dataclass
class Result:
    subscribers: int
    payload: int
    rate: float
    store: str
    workers: int
    window_s: float = 0.0
    published: int = 0
    publish_errors: int = 0
    publishes_per_s: float = 0.0
    delivered: int = 0
    deliveries_per_s: float = 0.0
    delivery_ratio: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    connect_per_s: float = 0.0
    hub_cpu_pct: float = 0.0
    hub_rss_kib: int = 0
    hub_rss_per_sub_bytes: float = 0.0
    load_cpu_pct: float = 0.0
    saturated_load: bool = False


# -- subscribers (child processes) ---------------------------------------------------------------


class _Sub(asyncio.Protocol):
    __slots__ = ("head_done", "state", "tail")

    def __init__(self, state: _SubState) -> None:
        self.state = state
        self.tail = b""
        self.head_done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(
            f"GET {HUB_PATH}?topic={TOPIC} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        state = self.state
        if not self.head_done:
            head_end = data.find(b"\r\n\r\n")
            if head_end < 0:
                return
            self.head_done = True
            state.connected += 1
            data = data[head_end + 4 :]
        if not state.counting:
            self.tail = data[-1:]
            return
        state.events += (self.tail + data).count(b"\n\n")
        self.tail = data[-1:]
        if state.sample_every and state.chunks % state.sample_every == 0:
            at = data.find(b"data: ")
            if at >= 0 and len(data) >= at + 26:
                try:
                    sent = int(data[at + 6 : at + 26])
                except ValueError:
                    sent = 0
                if sent:
                    state.latencies.append((time.monotonic_ns() - sent) / 1e6)
        state.chunks += 1


@dataclass
class _SubState:
    connected: int = 0
    counting: bool = False
    events: int = 0
    chunks: int = 0
    sample_every: int = 1
    latencies: list[float] = field(default_factory=list)


def subscriber_process(port: int, count: int, cpu: int | None, pipe: Connection) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    state = _SubState()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        for _ in range(count):
            await loop.create_connection(lambda: _Sub(state), "127.0.0.1", port)
        while state.connected < count:
            await asyncio.sleep(0.01)
        pipe.send(("connected", time.monotonic() - started))
        while True:
            while not pipe.poll():
                await asyncio.sleep(0.005)
            command = pipe.recv()
            if command == "start":
                state.counting, state.events, state.chunks = True, 0, 0
                state.latencies.clear()
            elif command == "count":
                pipe.send(state.events)
            elif command == "stop":
                cpu_s = resource.getrusage(resource.RUSAGE_SELF)
                pipe.send(
                    (state.events, state.latencies[:200_000], cpu_s.ru_utime + cpu_s.ru_stime)
                )
                return

    uvloop.run(main())


# -- publisher -----------------------------------------------------------------------------------


class _Pub(asyncio.Protocol):
    def __init__(self, owner: Publisher) -> None:
        self.owner = owner
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answered = 0
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head = self.buffer[:head_end]
            lowered = head.lower()
            length_at = lowered.find(b"content-length: ")
            length = 0
            if length_at >= 0:
                line_end = lowered.find(b"\r\n", length_at)
                length = int(head[length_at + 16 : line_end if line_end >= 0 else None])
            if len(self.buffer) < head_end + 4 + length:
                break
            if not head.startswith(b"HTTP/1.1 200"):
                self.owner.errors += 1
            self.buffer = self.buffer[head_end + 4 + length :]
            answered += 1
        if answered:
            self.in_flight -= answered
            self.owner.acked += answered
            self.owner.answered(self)


class Publisher:
    def __init__(self, port: int, payload: int, window: int, conns: int) -> None:
        self.port, self.payload, self.window, self.conns = port, payload, window, conns
        token = jwt.encode({"mercure": {"publish": ["*"]}}, KEY, algorithm="HS256")
        self.head = (
            f"POST {HUB_PATH} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
        ).encode()
        self.pubs: list[_Pub] = []
        self.sent = self.acked = self.errors = 0
        self.running = False

    def request(self) -> bytes:
        body = (
            b"topic=" + TOPIC.encode().replace(b":", b"%3A") + b"&data=%020d" % time.monotonic_ns()
        )
        body += b"x" * max(0, self.payload - 20)
        return self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.conns):
            _, pub = await loop.create_connection(lambda: _Pub(self), "127.0.0.1", self.port)
            self.pubs.append(pub)

    def send(self, pub: _Pub, n: int) -> None:
        if n <= 0 or pub.transport is None:
            return
        pub.transport.write(b"".join(self.request() for _ in range(n)))
        pub.in_flight += n
        self.sent += n

    def answered(self, pub: _Pub) -> None:
        if self.running and self.rate == 0:
            self.send(pub, self.window - pub.in_flight)

    rate = 0.0

    async def run(self, rate: float, seconds: float) -> None:
        self.rate, self.running = rate, True
        if rate == 0:
            for pub in self.pubs:
                self.send(pub, self.window)
            await asyncio.sleep(seconds)
        else:
            start = time.monotonic()
            done = 0
            while (elapsed := time.monotonic() - start) < seconds:
                due = int(elapsed * rate) - done
                if due > 0:
                    pub = self.pubs[done % len(self.pubs)]
                    self.send(pub, due)
                    done += due
                await asyncio.sleep(0.001)
        self.running = False
        deadline = time.monotonic() + 10
        while any(p.in_flight for p in self.pubs) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


# -- orchestration -------------------------------------------------------------------------------


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
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return hub
        except OSError:
            time.sleep(0.05)
    hub.kill()
    raise RuntimeError("uvicorn did not start")


def launch(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    if args.face == "asgi":
        return launch_asgi(args, port)
    serve = [
        "--anonymous",
        "--no-demo",
        "--heartbeat",
        "0",
        "--history-size",
        "1000",
        "--max-write-buffer",
        str(64 << 20),
        "--max-connections",
        "100000",
        "--max-connections-per-ip",
        "0",
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


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(args: argparse.Namespace, port: int, hub_root: int) -> Result:
    result = Result(args.subscribers, args.payload, args.rate, args.store, args.workers)
    procs: list[mp.Process] = []
    pipes: list[Connection] = []
    per = [args.subscribers // args.client_procs] * args.client_procs
    per[0] += args.subscribers - sum(per)
    started = time.monotonic()
    for count in per:
        parent, child = mp.Pipe()
        p = mp.Process(target=subscriber_process, args=(port, count, args.load_cpu, child))
        p.start()
        procs.append(p)
        pipes.append(parent)
    try:
        for pipe in pipes:
            while not pipe.poll():
                await asyncio.sleep(0.01)
            pipe.recv()
        result.connect_per_s = args.subscribers / (time.monotonic() - started)
        pids = hub_pids(hub_root)
        result.hub_rss_kib = rss_kib(pids)
        publisher = Publisher(port, args.payload, args.window, args.conns)
        await publisher.connect()
        if args.warmup:
            await publisher.run(args.rate, args.warmup)
            await asyncio.sleep(0.5)
        for pipe in pipes:
            pipe.send("start")
        await asyncio.sleep(0.05)
        acked_before, errors_before = publisher.acked, publisher.errors
        cpu_before, t0 = proc_cpu_s(pids), time.monotonic()
        await publisher.run(args.rate, args.duration)
        t1 = time.monotonic()
        cpu_hub = proc_cpu_s(pids) - cpu_before
        result.window_s = t1 - t0
        result.published = publisher.acked - acked_before
        result.publish_errors = publisher.errors - errors_before
        expected = result.published * args.subscribers
        last, still = -1, time.monotonic()
        while time.monotonic() - still < 2.0 and time.monotonic() - t1 < 30:
            for pipe in pipes:
                pipe.send("count")
            now = sum(pipe.recv() for pipe in pipes)
            if now >= expected:
                break
            if now != last:
                last, still = now, time.monotonic()
            await asyncio.sleep(0.05)
        latencies: list[float] = []
        load_cpu = 0.0
        for pipe in pipes:
            pipe.send("stop")
            events, samples, cpu = pipe.recv()
            result.delivered += events
            latencies += samples
            load_cpu += cpu
        result.publishes_per_s = result.published / result.window_s
        result.deliveries_per_s = result.delivered / result.window_s
        result.delivery_ratio = result.delivered / expected if expected else 0.0
        result.latency_ms = {
            "p50": percentile(latencies, 0.50),
            "p90": percentile(latencies, 0.90),
            "p99": percentile(latencies, 0.99),
            "max": max(latencies, default=float("nan")),
        }
        result.hub_cpu_pct = 100 * cpu_hub / result.window_s
        result.hub_rss_per_sub_bytes = result.hub_rss_kib * 1024 / args.subscribers
        own = resource.getrusage(resource.RUSAGE_SELF)
        total_load = load_cpu + own.ru_utime + own.ru_stime
        result.load_cpu_pct = 100 * total_load / (time.monotonic() - started)
        result.saturated_load = result.load_cpu_pct > 90 * (1 if args.load_cpu is not None else 2)
        return result
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def report(result: Result) -> str:
    """The human summary of one run."""
    lat = result.latency_ms
    rate = "max" if not result.rate else f"{result.rate:g}/s"
    lines = [
        f"{result.subscribers} subscribers, store {result.store}, workers {result.workers}, "
        f"rate {rate}, payload {result.payload} B",
        f"  published   {result.publishes_per_s:12,.0f} events/s  ({result.publish_errors} errors)",
        f"  delivered   {result.deliveries_per_s:12,.0f} events/s  "
        f"ratio {result.delivery_ratio:.4f}",
        f"  latency ms  p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
        f"max {lat['max']:.2f}",
        f"  hub         cpu {result.hub_cpu_pct:.0f}%  rss {result.hub_rss_kib / 1024:.1f} MiB "
        f"({result.hub_rss_per_sub_bytes:,.0f} B/subscriber)  "
        f"connect {result.connect_per_s:,.0f}/s",
        f"  load        cpu {result.load_cpu_pct:.0f}%"
        + ("  (load generator saturated: the hub may go faster)" if result.saturated_load else ""),
    ]
    return "\n".join(lines)


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
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {args.load_cpu})
    port = free_port()
    hub = launch(args, port)
    try:
        result = uvloop.run(measure(args, port, hub.pid))
    finally:
        stop_hub(hub)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
