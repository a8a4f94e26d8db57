"""The Backend contract: every backend passes this suite unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence

import pytest

from ssehub.backends import EARLIEST, Backend
from ssehub.events import Event, StoredEvent

from .backends import make_backend, store_url

KINDS = ["memory", "sqlite", "redis"]


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    with store_url(request.param) as u:
        yield u


class Opened:
    """A started backend and everything its sink received."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.sunk: list[StoredEvent] = []
        self.start_position = 0

    def sink(self, batch: Sequence[StoredEvent]) -> None:
        self.sunk.extend(batch)

    async def publish(self, *ids: str | None, topic: str = "t") -> list[StoredEvent]:
        return await self.backend.append([Event((topic,), f"data {x}", id=x) for x in ids])

    async def delivered(self, count: int, within: float = 5.0) -> list[StoredEvent]:
        """Wait until the sink holds ``count`` events (Redis delivers through its reader)."""
        deadline = asyncio.get_running_loop().time() + within
        while len(self.sunk) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"sink got {len(self.sunk)} of {count}")
            await asyncio.sleep(0.01)
        return self.sunk


def contract(
    url: str, history_size: int = 100, history_max_age: float = 0.0
) -> Callable[[Callable[[Opened], Awaitable[None]]], None]:
    """Run a scenario against a started backend, and close it afterwards."""

    def runner(scenario: Callable[[Opened], Awaitable[None]]) -> None:
        async def go() -> None:
            opened = Opened(make_backend(url, history_size, history_max_age))
            opened.start_position = await opened.backend.start(opened.sink)
            try:
                await scenario(opened)
            finally:
                await opened.backend.close()

        asyncio.run(go())

    return runner


def ids(events: Sequence[StoredEvent]) -> list[str]:
    return [e.id for e in events]


def test_order_positions_and_generated_ids(url: str) -> None:
    @contract(url)
    async def _(hub: Opened) -> None:
        first = await hub.publish(None, None, "custom:1")
        second = await hub.publish(None)
        everything = first + second
        positions = [e.position for e in everything]
        assert positions == sorted(positions)
        assert len(set(positions)) == 4
        assert all(e.id.startswith("urn:uuid:") for e in everything if e.id != "custom:1")
        assert len(set(ids(everything))) == 4
        assert ids(await hub.delivered(4)) == ids(everything)
        assert hub.backend.last_id == second[0].id
        assert first[2].wire == b"id: custom:1\ndata: data custom:1\n\n"


def test_since_an_id_replays_what_followed(url: str) -> None:
    @contract(url)
    async def _(hub: Opened) -> None:
        events = await hub.publish("a", "https://example.com/b?x=1", "ü c", "d")
        upto = events[-1].position
        replay = await hub.backend.since("https://example.com/b?x=1", upto)
        assert replay.found
        assert ids(replay.events) == ["ü c", "d"]
        assert [e.data for e in replay.events] == ["data ü c", "data d"]
        assert [e.topics for e in replay.events] == [("t",), ("t",)]
        assert ids((await hub.backend.since("d", upto)).events) == []
        # Only up to ``upto``: what is past it reaches the hub through the sink.
        assert ids((await hub.backend.since("a", events[2].position)).events) == [
            "https://example.com/b?x=1",
            "ü c",
        ]


def test_earliest_unknown_and_evicted(url: str) -> None:
    @contract(url, history_size=3)
    async def _(hub: Opened) -> None:
        events = await hub.publish("e1", "e2", "e3", "e4", "e5")
        upto = events[-1].position
        earliest = await hub.backend.since(EARLIEST, upto)
        assert earliest.found
        assert ids(earliest.events) == ["e3", "e4", "e5"]
        for gone in ("e1", "never-published"):
            replay = await hub.backend.since(gone, upto)
            assert not replay.found
            assert ids(replay.events) == ["e3", "e4", "e5"]
        kept = await hub.backend.since("e3", upto)
        assert kept.found
        assert ids(kept.events) == ["e4", "e5"]


def test_event_fields_survive_storage(url: str) -> None:
    @contract(url)
    async def _(hub: Opened) -> None:
        event = Event(("https://a/1", "urn:alt"), "l1\nl2\r\n  l3", True, "f1", "kind", 1500)
        [stored] = await hub.backend.append([event])
        [replayed] = (await hub.backend.since(EARLIEST, stored.position)).events
        for got in (stored, replayed, (await hub.delivered(1))[0]):
            assert (got.topics, got.data, got.private, got.id, got.type, got.retry) == (
                event.topics,
                event.data,
                True,
                "f1",
                "kind",
                1500,
            )
            assert got.wire == stored.wire


def test_retention_by_age(url: str) -> None:
    @contract(url, history_max_age=1.0)
    async def _(hub: Opened) -> None:
        [old] = await hub.publish("old")
        # Until the backend itself has let it go (a second or so), not a fixed sleep.
        deadline = asyncio.get_running_loop().time() + 15
        while ids((await hub.backend.since(EARLIEST, old.position)).events) == ["old"]:
            assert asyncio.get_running_loop().time() < deadline, "'old' outlived its max age"
            await asyncio.sleep(0.05)
        [new] = await hub.publish("new")
        replay = await hub.backend.since(EARLIEST, new.position)
        assert ids(replay.events) == ["new"]
        assert not (await hub.backend.since("old", new.position)).found


def test_concurrent_publishers_get_one_total_order(url: str) -> None:
    @contract(url, history_size=1000)
    async def _(hub: Opened) -> None:
        batches = await asyncio.gather(
            *(hub.publish(*(f"p{p}-{i}" for i in range(10))) for p in range(20))
        )
        stored = sorted((e for batch in batches for e in batch), key=lambda e: e.position)
        assert len({e.position for e in stored}) == 200
        for batch in batches:  # a batch keeps its own order
            assert [e.position for e in batch] == sorted(e.position for e in batch)
        replay = await hub.backend.since(EARLIEST, stored[-1].position)
        assert ids(replay.events) == ids(stored)
        assert ids(await hub.delivered(200)) == ids(stored)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])  # memory history ends with its process
def test_restart_continues_history(kind: str) -> None:
    with store_url(kind) as url:
        asyncio.run(_restart(url))


async def _restart(url: str) -> None:
    first = make_backend(url)
    await first.start(lambda batch: None)
    events = await first.append([Event(("t",), str(i), id=f"r{i}") for i in range(3)])
    await first.close()
    again = make_backend(url)
    start = await again.start(lambda batch: None)
    try:
        assert start == events[-1].position
        assert again.last_id == "r2"
        replay = await again.since("r0", start)
        assert replay.found
        assert ids(replay.events) == ["r1", "r2"]
        [later] = await again.append([Event(("t",), "later")])
        assert later.position > start
    finally:
        await again.close()
