"""CPU per publish through the standalone server's request path, in one process, no socket:
pipelined publishes are fed to ``HttpProtocol`` over a transport that only counts answers
(parser, app, auth, ``Hub.publish``, the commit chain, the backend, the answers; no
subscriber, so no fan-out). Process CPU time, so a busy machine changes it less than a load
run's publishes per second: compare two trees with alternating runs.

    python benchmarks/publish_cost.py [--publishes 100000] [--window 64] [--store memory]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from urllib.parse import quote

import jwt
import uvloop
from _common import KEY

from ssehub.app import build
from ssehub.server import ConnectionRegistry, HttpProtocol
from ssehub.settings import Settings

TOPIC = "urn:bench:fanout"


class _Counting:
    """A transport that keeps nothing: it counts the answers written to it."""

    def __init__(self) -> None:
        self.answered = 0

    def write(self, data: bytes) -> None:
        self.answered += data.count(b"HTTP/1.1 ")

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def measure(publishes: int, window: int, store: str) -> float:
    """Seconds of process CPU per publish, after a warm-up of 2,000 publishes."""
    settings = Settings(
        publisher_jwt_key=KEY,
        subscriber_jwt_key=KEY,
        anonymous=True,
        demo=False,
        heartbeat=0,
        history_size=1000,
        store=store,
    )
    app = await build(settings)
    token = jwt.encode({"mercure": {"publish": ["*"]}}, KEY, algorithm="HS256")
    head = (
        "POST /.well-known/mercure HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    ).encode()
    prefix = f"topic={quote(TOPIC, safe='')}&data=".encode()

    def request() -> bytes:  # as the load's publisher sends them: 100 bytes of data
        body = prefix + b"%020d" % time.monotonic_ns() + b"x" * 80
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    transport = _Counting()
    protocol = HttpProtocol(app, ConnectionRegistry(settings))
    protocol.connection_made(transport)  # type: ignore[arg-type]

    async def run(count: int) -> None:
        target = transport.answered + count
        while transport.answered < target:
            answered = transport.answered + window
            protocol.data_received(b"".join(request() for _ in range(window)))
            while transport.answered < answered:
                await asyncio.sleep(0)

    try:
        await run(2000)
        started = time.process_time()
        await run(publishes)
        return (time.process_time() - started) / publishes
    finally:
        await app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishes", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=64, help="publishes per packet")
    parser.add_argument("--store", default="memory")
    args = parser.parse_args()
    each: float = uvloop.run(measure(args.publishes, args.window, args.store))
    print(f"{1 / each:,.0f} publishes per CPU-second ({each * 1e6:.2f} us each), {args.store}")


if __name__ == "__main__":
    main()
