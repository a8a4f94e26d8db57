"""Two nodes on one Redis stream, one of them behind: every acknowledged event reaches it, or
it hears of a gap that counts exactly what it missed. Never a silent hole."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ssehub.backends import Gap, redis_scripts
from ssehub.backends.redis import RedisBackend
from ssehub.events import Event, StoredEvent

from .backends import redis_store
from .test_redis_backend import until


class Node:
    """A backend whose reader can be held (an event loop busy elsewhere, a paused process):
    its reads wait, before and after Redis answers, until released."""

    def __init__(self, store: str) -> None:
        self.backend = RedisBackend(store, history_size=5)  # a stream of 1024
        self.seen: list[str | Gap] = []
        self.running = asyncio.Event()
        self.running.set()
        self.backend.on_gap = self.seen.append
        client = self.backend._reader._client
        xread = client.xread

        async def held(*args: object, **kwargs: object) -> object:
            await self.running.wait()
            reply = await xread(*args, **kwargs)  # type: ignore[arg-type]
            await self.running.wait()
            return reply

        client.xread = held  # type: ignore[method-assign,assignment]

    async def start(self) -> None:
        def sink(batch: Sequence[StoredEvent]) -> None:
            self.seen.extend(e.id for e in batch)

        await self.backend.start(sink)

    def ids(self) -> list[str]:
        return [s for s in self.seen if isinstance(s, str)]


async def publish(node: Node, prefix: str, count: int, batch: int = 1000) -> list[str]:
    acked: list[str] = []
    for start in range(0, count, batch):
        events = [Event(("t",), "x", id=f"{prefix}{i}") for i in range(start, start + batch)]
        acked += [e.id for e in await node.backend.append(events[: count - start])]
    return acked


def assert_covered(seen: list[str | Gap], acked: list[str]) -> int:
    """Every acked event arrived in order, or a gap notice right before the next one counts
    exactly the ones skipped. Returns how many were missed (all told)."""
    place = {event_id: k for k, event_id in enumerate(acked)}
    previous, gap, missed = -1, None, 0
    for item in seen:
        if isinstance(item, Gap):
            gap = item
            continue
        k = place[item]
        if k != previous + 1:
            assert gap is not None, f"{k - previous - 1} events before {item} lost silently"
            assert gap.missed == k - previous - 1 and gap.resumed_at == item, (gap, item)
            missed += k - previous - 1
        previous, gap = k, None
    assert previous == len(acked) - 1, f"the last {len(acked) - 1 - previous} never came"
    return missed


def test_a_reader_held_past_the_stale_limit_hears_of_what_was_trimmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_scripts, "_READER_STALE_MS", 300)

    async def go() -> None:
        store = redis_store()
        a, b = Node(store), Node(store)
        await a.start()
        await b.start()
        try:
            b.running.clear()
            acked = await publish(a, "s", 1000)
            redis = a.backend._redis
            name = b.backend._reader.name
            # The appends declare b gone once its report is older than the limit ...
            while await redis.hget(b.backend.readers_key, name) is not None:
                acked += await publish(a, f"w{len(acked)}-", 1)
            # ... and then trim past what it has not read.
            acked += await publish(a, "t", 3000)
            assert await redis.xlen(a.backend.stream_key) < 3000
            b.running.set()
            acked += await publish(a, "end", 1)
            await until(lambda: b.ids()[-1:] == acked[-1:], "b never caught up")
            assert assert_covered(b.seen, acked) > 0
            assert_covered(a.seen, acked)
        finally:
            b.running.set()
            await a.backend.close()
            await b.backend.close()

    asyncio.run(go())


def test_one_batch_longer_than_the_bound_and_the_slack_reaches_a_held_reader_whole() -> None:
    async def go() -> None:
        store = redis_store()
        a, b = Node(store), Node(store)
        await a.start()
        await b.start()
        try:
            b.running.clear()
            acked = await publish(a, "before", 2000)
            limit = a.backend.maxlen + redis_scripts.READER_SLACK
            acked += await publish(a, "big", limit + 1000, batch=limit + 1000)  # one script
            b.running.set()  # the append trimmed what came before, never its own batch
            await until(lambda: b.ids()[-1:] == acked[-1:], "b never caught up", within=20)
            assert assert_covered(b.seen, acked) <= 2000
            # The next append, past the hard bound, trims what b had not read: b is told.
            b.running.clear()
            acked += await publish(a, "end", 1)
            b.running.set()
            acked += await publish(a, "after", 1)
            await until(lambda: b.ids()[-1:] == acked[-1:], "b never caught up")
            assert_covered(b.seen, acked)
            assert_covered(a.seen, acked)
        finally:
            b.running.set()
            await a.backend.close()
            await b.backend.close()

    asyncio.run(go())


def test_a_node_started_mid_burst_misses_nothing_after_its_start() -> None:
    async def go() -> None:
        store = redis_store()
        a = Node(store)
        await a.start()
        b = Node(store)
        try:
            burst = asyncio.ensure_future(publish(a, "m", 12_000, batch=500))
            await until(lambda: len(a.ids()) > 1000, "the burst did not start")
            await b.start()
            acked = await burst
            acked += await publish(a, "end", 1)
            await until(lambda: b.ids()[-1:] == acked[-1:], "b never caught up", within=20)
            first = b.ids()[0]
            assert_covered(b.seen, acked[acked.index(first) :])
        finally:
            await a.backend.close()
            await b.backend.close()

    asyncio.run(go())


def test_a_fault_in_delivery_is_a_gap_and_the_reader_goes_on() -> None:
    """A batch the hub's sink failed on (a fault of its own) is a gap its subscribers hear of;
    the reader does not die and leave the node deaf while publishes still succeed."""

    async def go() -> None:
        store = redis_store()
        a = Node(store)
        await a.start()
        b = RedisBackend(store, history_size=5)
        seen: list[str | Gap] = []
        b.on_gap = seen.append
        faults = 1

        def sink(batch: Sequence[StoredEvent]) -> None:
            nonlocal faults
            if faults and any(e.id == "boom" for e in batch):
                faults -= 1
                raise RuntimeError("a fault in the fan-out")
            seen.extend(e.id for e in batch)

        await b.start(sink)
        try:
            await publish(a, "boom", 1, batch=1)  # ids boom0: not the faulty one
            acked = await a.backend.append([Event(("t",), "x", id="boom")])
            await until(lambda: "boom0" in seen, "the first event never came")
            acked = await a.backend.append([Event(("t",), "x", id="after")])
            await until(lambda: seen[-1:] == ["after"], "the reader died with the sink's fault", 5)
            gap = seen[-2]
            assert isinstance(gap, Gap) and gap.resumed_at == "after", seen
            assert [e.id for e in acked] == ["after"]
        finally:
            await a.backend.close()
            await b.close()

    asyncio.run(go())
