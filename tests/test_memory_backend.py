"""The memory backend: ids, order, history bounded by count and age, replay by position."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Sequence

import pytest

from ssehub.backends import EARLIEST
from ssehub.backends.memory import MemoryBackend
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
