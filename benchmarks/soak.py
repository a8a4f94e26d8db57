"""Soak: normal subscribers and a publisher alongside hostile clients, for minutes.

Hostile clients: slowloris heads, random bytes, subscribers that never read, connect/close
churn, publishes with forged tokens. At the end every normal subscriber must have received
every acknowledged event (ratio exactly 1.0); the hub's RSS is sampled throughout.

    python benchmarks/soak.py --minutes 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import socket
import time
from typing import cast

import jwt
import uvloop
from _common import HUB_PATH, KEY, free_port, rss_kib, start_hub, stop_hub

TOPIC = "urn:soak:normal"


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


async def hostile(port: int, stop: asyncio.Event, counts: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    held: list[socket.socket] = []
    forged = jwt.encode({"mercure": {"publish": ["*"]}}, "not-the-key-0123456789-0123456789")
    rng = random.Random(7)
    tick = 0
    while not stop.is_set():
        tick += 1
        try:
            s = socket.socket()
            s.setblocking(False)
            if tick % 5 == 0:  # slowloris: a head that never ends
                await loop.sock_connect(s, ("127.0.0.1", port))
                await loop.sock_sendall(s, b"POST /.well-known/mercure HTTP/1.1\r\nX-Slow: ")
                held.append(s)
                counts["slowloris"] += 1
            elif tick % 5 == 1:  # random bytes
                await loop.sock_connect(s, ("127.0.0.1", port))
                await loop.sock_sendall(s, rng.randbytes(rng.randint(1, 2000)))
                s.close()
                counts["garbage"] += 1
            elif tick % 5 == 2 and tick % 50 == 2:  # a subscriber that never reads
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                await loop.sock_connect(s, ("127.0.0.1", port))
                await loop.sock_sendall(
                    s, f"GET {HUB_PATH}?topic={TOPIC} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                )
                held.append(s)
                counts["stopped_readers"] += 1
            elif tick % 5 == 3:  # churn
                await loop.sock_connect(s, ("127.0.0.1", port))
                await loop.sock_sendall(
                    s, f"GET {HUB_PATH}?topic=churn HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                )
                s.close()
                counts["churn"] += 1
            else:  # forged token
                await loop.sock_connect(s, ("127.0.0.1", port))
                body = b"topic=x&data=y"
                await loop.sock_sendall(
                    s,
                    f"POST {HUB_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {forged}\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body,
                )
                s.close()
                counts["forged"] += 1
        except OSError:
            counts["refused"] += 1
            s.close()
        if len(held) > 200:  # keep the open-file count bounded
            held.pop(0).close()
        await asyncio.sleep(0.01)
    for s in held:
        s.close()


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
    counts = dict.fromkeys(
        ("slowloris", "garbage", "stopped_readers", "churn", "forged", "refused"), 0
    )
    stop = asyncio.Event()
    attack = asyncio.create_task(hostile(port, stop, counts))
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
            print(f"  t={elapsed:5.0f}s rss {now / 1024:6.1f} MiB  acked {acked}  {counts}")
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
    print(f"hostile clients: {counts}")
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
