"""Soak: normal subscribers and a publisher alongside hostile clients, for minutes.

Hostile clients: slowloris heads, random bytes, subscribers that never read, connect/close
churn, publishes with forged tokens, template-bomb selectors, anonymous subscribers that
come and go (the hub runs with --subscriptions), signed tokens with CR/LF in a JWT header
field via ?authorization=, publishes whose ids have leading/trailing spaces, a valid
publish pipelined with garbage, publishers that half-close, earliest-replay subscribers
that never read, a HEAD of every route followed by a GET on the same connection (HTTP/1.0
and 1.1), publishes of many long topics and large bodies, anonymous subscribers holding
long URI templates, and HTTP/2 connections of ten streams. What each hostile kind got back
is counted and printed; the only assertion is that every normal subscriber received every
acknowledged event (ratio exactly 1.0). The hub's RSS is sampled throughout.

    python benchmarks/soak.py --minutes 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
from typing import cast

import jwt
import uvloop
from _common import HUB_PATH, KEY, free_port, rss_kib, start_hub, stop_hub
from _hostile import TOPIC, Hostile


class Counter(asyncio.Protocol):
    """A normal subscriber: counts events (each ends with a blank line)."""

    def __init__(self) -> None:
        self.events = 0
        self.tail = b""
        self.open = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(
            f"GET {HUB_PATH}?topic={TOPIC} HTTP/1.1\r\nHost: soak\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.events += (self.tail + data).count(b"\n\n")
        self.tail = data[-1:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False


async def soak(port: int, pid: int, minutes: float, subscribers: int, rate: float) -> int:
    loop = asyncio.get_running_loop()
    normal = []
    for _ in range(subscribers):
        _, sub = await loop.create_connection(Counter, "127.0.0.1", port)
        normal.append(sub)
    token = jwt.encode({"mercure": {"publish": ["*"]}}, KEY)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = f"topic={TOPIC}&data=" + "x" * 100
    request = (
        f"POST {HUB_PATH} HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    hostile = Hostile(port, token)
    counts = hostile.counts
    stop = asyncio.Event()
    attack = asyncio.create_task(hostile.run(stop))
    await asyncio.sleep(1)
    before = peak = rss_kib([pid])
    acked = 0
    started = time.monotonic()
    next_sample = started
    print(f"rss at start {before / 1024:.1f} MiB")
    while (elapsed := time.monotonic() - started) < minutes * 60:
        writer.write(request)
        await writer.drain()
        line = await reader.readuntil(b"\r\n\r\n")
        length = int(line.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        if line.startswith(b"HTTP/1.1 200"):
            acked += 1
        if time.monotonic() >= next_sample:
            now = rss_kib([pid])
            peak = max(peak, now)
            total = sum(sum(c.values()) for c in counts.values())
            print(f"  t={elapsed:5.0f}s rss {now / 1024:6.1f} MiB  acked {acked}  hostile {total}")
            next_sample += 10
        await asyncio.sleep(max(0.0, started + acked / rate - time.monotonic()))
    stop.set()
    await attack
    deadline = time.monotonic() + 10
    while any(s.events < acked for s in normal) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    after = rss_kib([pid])
    got = [s.events for s in normal]
    complete = sum(1 for g in got if g == acked)
    print(
        f"published {acked} events; {complete}/{subscribers} normal subscribers got all of "
        f"them (min {min(got)}, max {max(got)}); still open: {sum(s.open for s in normal)}"
    )
    print(
        f"hub rss: start {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
        f"end {after / 1024:.1f} MiB"
    )
    print("hostile clients, by kind, what they got:")
    for kind, outcomes in sorted(counts.items()):
        print(f"  {kind:20} {', '.join(f'{k}: {v}' for k, v in sorted(outcomes.items()))}")
    return 0 if complete == subscribers else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="normal events/s")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {1})
    port = free_port()
    hub = start_hub(
        port,
        [
            "--anonymous",
            "--no-demo",
            "--heartbeat",
            "5",
            "--max-write-buffer",
            "262144",
            "--dispatch-timeout",
            "5",
            "--head-timeout",
            "2",
            "--max-connections-per-ip",
            "0",
            "--subscriptions",
            "--http2",
        ],
        "0",
    )
    try:
        code = uvloop.run(soak(port, hub.pid, args.minutes, args.subscribers, args.rate))
    finally:
        stop_hub(hub)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
