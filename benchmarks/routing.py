"""Routing cost under hostile templates and subscriber churn, in process (no sockets).

Hostile views hold templates of many adjacent expressions; between publishes a subscriber
joins and leaves (its own view each time, as an anonymous client's churn makes). Prints the
mean cost of one publish (fan-out included) and of one join + leave. Uses only the public
engine API, so it runs against older code too:

    python benchmarks/routing.py --expressions 300
    PYTHONPATH=/path/to/old/src python benchmarks/routing.py --expressions 300
"""

from __future__ import annotations

import argparse
import asyncio
import time

from ssehub import Event, Hub, MemoryBackend
from ssehub.subscriber import Subscriber


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


def bomb(n: int, expressions: int) -> str:
    """A template of ``expressions`` alternating adjacent expressions (no run to collapse),
    led by one that takes any topic's first characters, so no literal prefix rules it out."""
    rest = expressions - 1
    return f"{{+v{n}}}" + "{/a}{.b}" * (rest // 2) + "{/a}" * (rest % 2)


async def run(args: argparse.Namespace) -> None:
    hub = Hub(MemoryBackend(history_size=100), heartbeat=0)
    await hub.start()
    sink = _Sink()
    for n in range(args.views):
        await hub.subscribe(Subscriber(sink, (bomb(n, args.expressions),), None), None, _preamble)
    normal = _Sink()
    await hub.subscribe(Subscriber(normal, ("urn:normal:{id}",), None), None, _preamble)

    async def publish(topic: str) -> None:
        before = normal.writes
        await hub.publish(Event((topic,), "x"))
        while normal.writes == before:  # the fan-out runs on a later loop iteration
            await asyncio.sleep(0)

    for i in range(args.topics):  # the cycled topics were all published once before
        await publish(f"urn:normal:{i}")
    publish_s = churn_s = fan_out_s = 0.0
    for i in range(args.publishes):
        started = time.perf_counter()
        for j in range(args.churn):
            selector = bomb(i, args.expressions) if args.churn_bombs else f"urn:churn:{i}:{j}"
            sub = Subscriber(sink, (selector,), None)
            await hub.subscribe(sub, None, _preamble)
            hub.detach(sub)
        joined = time.perf_counter()
        topic = f"urn:normal:{i % args.topics if args.topics else i}"
        await publish(topic)
        publish_s += time.perf_counter() - joined
        fan_out_s += hub.fanout._last_cost  # the fan-out's own time, routing included
        churn_s += joined - started
    await hub.close()
    per = args.publishes
    print(
        f"{args.views} views x {args.expressions} expressions, {args.churn} join+leave "
        f"{'(hostile) ' if args.churn_bombs else ''}per "
        f"publish, topics {'cycled over ' + str(args.topics) if args.topics else 'all new'}: "
        f"publish {publish_s / per * 1e6:,.0f} us (fan-out {fan_out_s / per * 1e6:,.0f} us), "
        "join+leave "
        f"{churn_s / max(1, per * args.churn) * 1e6:,.0f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, default=100, help="hostile template subscribers")
    parser.add_argument("--expressions", type=int, default=300, help="per hostile template")
    parser.add_argument("--publishes", type=int, default=300)
    parser.add_argument("--churn", type=int, default=1, help="joins+leaves before each publish")
    parser.add_argument(
        "--churn-bombs", action="store_true", help="churning subscribers hold hostile templates"
    )
    parser.add_argument("--topics", type=int, default=50, help="topics cycled; 0: always new")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
