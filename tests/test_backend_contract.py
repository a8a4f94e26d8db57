"""The Backend contract: every backend passes this suite unchanged."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence

import pytest

from ssehub.backends import EARLIEST, Backend, Replay
from ssehub.contract import Appended, new_event_id
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


def test_generated_ids_are_random_uuid_urns() -> None:
    made = [new_event_id() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for event_id in made:
        assert event_id.startswith("urn:uuid:")
        parsed = uuid.UUID(event_id.removeprefix("urn:uuid:"))
        assert str(parsed) == event_id.removeprefix("urn:uuid:")  # canonical: lower case, dashes
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    # Every bit uuid4 leaves random is random here too: each varies over the ids made.
    values = [uuid.UUID(event_id[9:]).int for event_id in made]
    fixed = (0xF000 << 64) | (0xC000 << 48)  # version and the variant's top bits
    varying = 0
    for value in values:
        varying |= value ^ values[0]
    assert varying == ((1 << 128) - 1) & ~fixed


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


def test_retry_with_same_id_is_not_a_duplicate(url: str) -> None:
    @contract(url, history_size=5)
    async def _(hub: Opened) -> None:
        a, _ = await hub.publish("a", "b")
        retried = await hub.publish("a")  # the publisher did not hear back, and retries
        [again] = retried
        assert (again.id, again.position, again.data) == ("a", a.position, a.data)
        assert isinstance(retried, Appended) and retried.repeats == 1  # counted once
        repeating = await hub.publish("d", "d", None)  # a repeat inside one batch
        d1, d2, other = repeating
        assert (d2.id, d2.position) == ("d", d1.position)
        assert isinstance(repeating, Appended) and repeating.repeats == 1
        assert other.position > d1.position
        replay = await hub.backend.since(EARLIEST, other.position)
        assert ids(replay.events) == ["a", "b", "d", other.id]
        assert ids(await hub.delivered(4)) == ["a", "b", "d", other.id]
        # Once history no longer holds an id, the same id is a new event.
        await hub.publish("f1", "f2", "f3", "f4", "f5")
        [back] = await hub.publish("a")
        assert back.position > a.position
        assert ids(await hub.delivered(10))[-6:] == ["f1", "f2", "f3", "f4", "f5", "a"]
        await hub.publish("z")  # nothing else was delivered meanwhile
        assert ids(await hub.delivered(11))[-2:] == ["a", "z"]
        assert len(hub.sunk) == 11


def test_broadcast_reaches_the_sink_but_not_history(url: str) -> None:
    @contract(url, history_size=3)
    async def _(hub: Opened) -> None:
        await hub.publish("a")
        await hub.delivered(1)  # a broadcast may travel apart from the stored events
        sent = await hub.backend.broadcast([Event(("s",), f"s{i}", id=f"s{i}") for i in range(5)])
        assert ids(sent) == [f"s{i}" for i in range(5)]
        assert all(b"id:" not in e.wire for e in sent)  # never a client's resume point
        await hub.delivered(6)
        [b] = await hub.publish("b")
        assert ids(await hub.delivered(7)) == ["a", "s0", "s1", "s2", "s3", "s4", "b"]
        assert all(b"id:" not in e.wire for e in hub.sunk[1:6])
        replay = await hub.backend.since(EARLIEST, b.position)
        assert ids(replay.events) == ["a", "b"]  # five broadcasts evicted nothing
        assert hub.backend.last_id == "b"
        assert (await hub.backend.since("a", b.position)).found


async def pages(backend: Backend, after: str | int, upto: int, limit: int) -> list[Replay]:
    """Every page of a replay, as the hub reads them: each after the last one's last event."""
    page = await backend.since(after, upto, limit)
    out = [page]
    while page.more:
        page = await backend.since(page.events[-1].position, upto, limit)
        out.append(page)
    return out


def test_replay_in_pages_delivers_every_event_once_in_order(url: str) -> None:
    @contract(url, history_size=1000)
    async def _(hub: Opened) -> None:
        sizes = [(i * 37) % 400 for i in range(60)]
        stored = await hub.backend.append(
            [Event(("t",), "x" * n, id=f"p{i}") for i, n in enumerate(sizes)]
        )
        upto = stored[-1].position
        limit = 1000
        for after, expected in ((EARLIEST, stored), ("p9", stored[10:])):
            got = await pages(hub.backend, after, upto, limit)
            assert len(got) > 5
            assert all(page.found for page in got)
            assert ids([e for page in got for e in page.events]) == ids(expected)
            assert [page.more for page in got] == [True] * (len(got) - 1) + [False]
            for page in got:  # a page stops at its bound: it passes it by one event at most
                assert sum(len(e.wire) for e in page.events[:-1]) < limit
        # Paging never reads past ``upto``.
        got = await pages(hub.backend, EARLIEST, stored[29].position, limit)
        assert ids([e for page in got for e in page.events]) == ids(stored[:30])
        # A page holds one event at least, however small its bound.
        [first, *_] = await pages(hub.backend, EARLIEST, upto, 0)
        assert ids(first.events) == ["p0"]


def test_a_page_whose_anchor_left_history_reports_a_gap(url: str) -> None:
    @contract(url, history_size=5)
    async def _(hub: Opened) -> None:
        stored = await hub.publish(*(f"g{i}" for i in range(5)))
        first = await hub.backend.since(EARLIEST, stored[-1].position, 1)
        assert ids(first.events) == ["g0"] and first.more
        later = await hub.publish(*(f"h{i}" for i in range(10)))
        page = await hub.backend.since(first.events[-1].position, later[-1].position, 1 << 20)
        assert not page.found  # g1..h4 are gone: the subscriber must hear of it
        assert ids(page.events) == [f"h{i}" for i in range(5, 10)]
        # While its anchor is held, a continuation is found and starts right after it.
        kept = await hub.backend.since(later[6].position, later[-1].position, 1 << 20)
        assert kept.found
        assert ids(kept.events) == ["h7", "h8", "h9"]


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
