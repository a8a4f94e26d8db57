"""The memory backend: ids, order, history bounded by count and age, replay by position."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Sequence

import pytest

from ssehub.backends import EARLIEST
from ssehub.backends.memory import MemoryBackend, _footprint
from ssehub.events import Event, StoredEvent


async def append(backend: MemoryBackend, *ids: str | None) -> list[StoredEvent]:
    return await backend.append([Event(("t",), f"d{i}", id=x) for i, x in enumerate(ids)])


def test_ids_positions_and_sink_order() -> None:
    async def go() -> None:
        seen: list[Sequence[StoredEvent]] = []
        backend = MemoryBackend(history_size=10)
        await backend.start(seen.append)
        first = await append(backend, None, "custom")
        second = await append(backend, None)
        assert [e.position for e in first + second] == [1, 2, 3]
        assert first[0].id.startswith("urn:uuid:")
        assert first[1].id == "custom"
        assert first[0].id != second[0].id
        assert [list(b) for b in seen] == [first, second]
        assert b"id: custom\n" in first[1].wire
        assert backend.last_id == second[0].id

    asyncio.run(go())


def test_since_found_earliest_unknown_and_upto() -> None:
    async def go() -> None:
        backend = MemoryBackend(history_size=3)
        events = await append(backend, "a", "b", "c", "d", "e")
        replay = await backend.since("c", upto=5)
        assert replay.found
        assert [e.id for e in replay.events] == ["d", "e"]
        assert [e.id for e in (await backend.since("c", upto=4)).events] == ["d"]
        earliest = await backend.since(EARLIEST, upto=5)
        assert earliest.found
        assert [e.id for e in earliest.events] == ["c", "d", "e"]
        evicted = await backend.since("a", upto=5)
        assert not evicted.found
        assert [e.id for e in evicted.events] == ["c", "d", "e"]
        assert not (await backend.since("nope", upto=5)).found
        assert events[-1].id == backend.last_id

    asyncio.run(go())


def test_id_reused_after_eviction_resumes_after_its_new_use() -> None:
    async def go() -> None:
        backend = MemoryBackend(history_size=3)
        await append(backend, "x", "y", "x", "z")  # the second x is a retry of the first
        assert [e.id for e in (await backend.since("x", upto=9)).events] == ["y", "z"]
        await append(backend, "w", "v")  # evicts x: the id may now name a new event
        await append(backend, "x", "u")
        assert [e.id for e in (await backend.since("x", upto=9)).events] == ["u"]

    asyncio.run(go())


def test_retention_by_age(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        now = [1000.0]
        monkeypatch.setattr(time, "time", lambda: now[0])
        backend = MemoryBackend(history_size=100, history_max_age=10)
        await append(backend, "old")
        now[0] += 6
        await append(backend, "new")
        now[0] += 6
        replay = await backend.since(EARLIEST, upto=99)
        assert [e.id for e in replay.events] == ["new"]
        assert not (await backend.since("old", upto=99)).found

    asyncio.run(go())


def test_zero_history_keeps_nothing() -> None:
    async def go() -> None:
        backend = MemoryBackend(history_size=0)
        await append(backend, "a")
        assert backend.last_id == EARLIEST
        assert list((await backend.since(EARLIEST, upto=9)).events) == []

    asyncio.run(go())


def test_retention_by_bytes() -> None:
    async def go() -> None:
        backend = MemoryBackend(history_size=1000, history_max_bytes=10_000)
        await backend.append([Event(("t",), "x" * 1000, id=f"e{i}") for i in range(20)])
        kept = (await backend.since(EARLIEST, upto=99)).events
        assert 0 < len(kept) < 20
        assert kept[-1].id == "e19"
        assert sum(2 * len(e.wire) + 200 for e in kept) <= 10_000

    asyncio.run(go())


@pytest.mark.parametrize(
    ("topic", "data", "event_id"),
    [
        ("t" * 65_536, "", None),  # long topics, as a publisher may send (several each)
        ("t", "", "i" * 1000),  # long ids, also keys of the id index
        ("t", "é" * 20_000, None),  # wide characters: the text costs more than its wire
        ("t", "x", None),  # tiny events: the per-event overhead is all there is
    ],
)
def test_history_max_bytes_counts_everything_history_holds(
    topic: str, data: str, event_id: str | None
) -> None:
    """Measured with tracemalloc, what history keeps alive stays under --history-max-bytes:
    before, only the wire was counted, and 1 MB topics grew the hub by hundreds of MB."""
    bound = 4 << 20

    async def go() -> int:
        backend = MemoryBackend(history_size=1_000_000, history_max_bytes=bound)
        await backend.start(lambda batch: None)
        tracemalloc.start()
        try:
            for i in range(200_000):
                # Fresh strings per event, as each publish request parses its own.
                topics = ((topic + str(i))[-len(topic) :], (topic + "alt" + str(i))[-len(topic) :])
                ident = None if event_id is None else f"{i}-{event_id}"
                await backend.append(
                    [Event(topics, (data + str(i))[-max(len(data), 1) :], id=ident)]
                )
                if backend.retained < i + 1 - 100:  # well past the bound
                    break
            else:
                raise AssertionError("history never reached its bound")
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return held

    held = asyncio.run(go())
    assert held < bound * 1.2, f"history holds {held >> 10} KiB over a {bound >> 10} KiB bound"


def test_bytes_held_stay_exact_through_trims_and_releases() -> None:
    """Each event's footprint is measured once, on append: what a trim takes off is what
    that event added, however many slots were trimmed and released before it."""

    async def go() -> None:
        backend = MemoryBackend(history_size=37, history_max_bytes=20_000)
        await backend.start(lambda batch: None)
        for i in range(500):
            # Sizes vary, so a footprint taken off for the wrong slot shows in the total.
            batch = [
                Event(("t" * (i % 7 + 1),), "é" * (i % 50), id=f"{i}-{j}") for j in range(i % 4)
            ]
            await backend.append(batch)
            retained = (await backend.since(EARLIEST, upto=10**9, limit=10**9)).events
            assert backend._bytes == sum(map(_footprint, retained))
            assert backend._bytes <= backend.history_max_bytes
        assert 0 < backend.retained <= 37

    asyncio.run(go())


class _Counted(list[StoredEvent]):
    """History that counts the events read out of it, by index or by iteration."""

    reads = 0

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        found = super().__getitem__(index)
        self.reads += len(found) if isinstance(index, slice) else 1
        return found

    def __iter__(self):  # type: ignore[no-untyped-def]
        for event in super().__iter__():
            self.reads += 1
            yield event


def test_resuming_near_the_end_of_a_long_history_reads_no_event_before_it() -> None:
    async def go() -> None:
        backend = MemoryBackend(history_size=200_000, history_max_bytes=1 << 30)
        await backend.start(lambda batch: None)
        for start in range(0, 100_000, 5000):
            await backend.append([Event(("t",), id=f"e{i}") for i in range(start, start + 5000)])
        counted = _Counted(backend._history)
        backend._history = counted
        for after in ("e99990", 99_991):  # an id, and the previous page's last position
            counted.reads = 0
            replay = await backend.since(after, 100_000)
            assert [e.id for e in replay.events] == [f"e{i}" for i in range(99_991, 100_000)]
            # Bisection reads ~17 events to find the start; walking there reads ~100 000.
            assert counted.reads < 100, f"{counted.reads} events read for a page of 9"

    asyncio.run(go())


def test_trimmed_history_still_resumes_by_id_and_position() -> None:
    async def go() -> None:
        backend = MemoryBackend(history_size=10)
        await backend.start(lambda batch: None)
        for start in range(0, 100, 7):
            await append(backend, *[f"e{i}" for i in range(start, min(start + 7, 100))])
        assert backend.retained == 10
        replay = await backend.since("e94", 100)
        assert replay.found and [e.id for e in replay.events] == [f"e{i}" for i in range(95, 100)]
        gone = await backend.since("e80", 100)
        assert not gone.found and gone.events[0].id == "e90"
        by_position = await backend.since(replay.events[0].position, 100)
        assert [e.id for e in by_position.events] == ["e96", "e97", "e98", "e99"]
        before = await backend.since(gone.events[0].position - 1, 100)
        assert before.found and len(before.events) == 10
        assert backend.last_id == "e99"

    asyncio.run(go())
