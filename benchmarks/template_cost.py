"""What anonymous subscribers' long URI templates cost each publish to a new topic, in
process (no sockets): ``--streams`` subscriptions from one address, each of 4 templates of
8 expressions (32 in all, the default --max-template-expressions) and ~2,000 characters,
whose literals occur at almost every position of the topics published.

    python benchmarks/template_cost.py [--streams 40] [--publishes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from ssehub import Event, Hub, MemoryBackend
from ssehub.subscriber import Subscriber
from ssehub.topics import check_selectors


class _Sink:
    """A stream that counts and drops what it is given."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def abort(self) -> None:
        pass

    async def drain(self) -> None:
        pass


def _preamble(_: object) -> bytes:
    return b""


def hostile(stream: int, k: int) -> str:
    """One template: a leading ``{+v}`` (any prefix), then 7 literals of one repeated
    character, each followed by an expression; lengths differ so no two are shared."""
    literal = "a" * (100 + stream * 4 + k)
    return "urn:{+v}" + "".join(f"{literal}{{+w{i}}}" for i in range(7))


async def per_publish(streams: int, publishes: int) -> float:
    """Seconds per publish to a new topic, fan-out included."""
    hub = Hub(MemoryBackend(history_size=100), heartbeat=0)
    await hub.start()
    sink = _Sink()
    for stream in range(streams):
        selectors = tuple(hostile(stream, k) for k in range(4))
        check_selectors(selectors, 2048, 32)  # what the hub accepts by default
        await hub.subscribe(Subscriber(sink, selectors, None), None, _preamble)
    start = time.perf_counter()
    for i in range(publishes):
        await hub.publish(Event((f"urn:{i}:" + "a" * 2000,), "x"))
    await asyncio.sleep(0)  # the fan-out of the last one
    took = time.perf_counter() - start
    await hub.close()
    return took / publishes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--publishes", type=int, default=20)
    args = parser.parse_args()
    bare = asyncio.run(per_publish(0, args.publishes))
    costly = asyncio.run(per_publish(args.streams, args.publishes))
    print(
        f"per publish to a new topic: {bare * 1e3:.2f} ms without templates,"
        f" {costly * 1e3:.1f} ms with {args.streams} streams x 4 templates"
    )


if __name__ == "__main__":
    main()
