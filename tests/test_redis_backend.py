"""The Redis backend against real Redis: what its Lua scripts keep true under pressure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import cast

import pytest

from ssehub.backends import EARLIEST, OutcomeUnknown
from ssehub.backends.redis import RedisBackend
from ssehub.events import Event, StoredEvent

from .backends import redis_store
from .support import free_port


def events(*ids: str | None, data: str = "d") -> list[Event]:
    return [Event(("t",), data, id=i) for i in ids]


async def started(
    history_size: int, history_max_age: float = 0.0
) -> tuple[RedisBackend, list[StoredEvent]]:
    backend = RedisBackend(redis_store(), history_size, history_max_age)
    sunk: list[StoredEvent] = []

    def sink(batch: Sequence[StoredEvent]) -> None:
        sunk.extend(batch)

    await backend.start(sink)
    return backend, sunk


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


def test_a_batch_longer_than_the_stream_reaches_the_reader_whole() -> None:
    async def go() -> None:
        backend, sunk = await started(history_size=5)  # the stream keeps 1024 entries
        try:
            ids = [f"b{i}" for i in range(1500)]
            stored = await backend.append(events(*ids))
            assert [e.id for e in stored] == ids
            await until(lambda: len(sunk) >= 1500, "the reader missed events of the batch")
            assert [e.id for e in sunk] == ids
            # Once the reader has said it read them, appends trim the stream to its bound.
            deadline = time.monotonic() + 10
            while await backend._redis.xlen(backend.stream_key) > backend.maxlen:
                assert time.monotonic() < deadline, "the stream stayed longer than its bound"
                await backend.append(events(None))
            await until(lambda: sunk[-1].id != "b1499", "the reader missed what followed")
        finally:
            await backend.close()

    asyncio.run(go())


def test_ageing_out_more_than_ten_thousand_at_once_leaves_no_index_behind() -> None:
    async def go() -> None:
        backend, _ = await started(history_size=20_000, history_max_age=0.2)
        try:
            ids = [f"old-{i}" for i in range(10_500)]
            await backend.append(events(*ids))
            redis = backend._redis
            latest = cast(
                "list[tuple[bytes, object]]", await redis.xrevrange(backend.stream_key, count=1)
            )
            newest = latest[0][0]
            newest_ms = _position(newest)[0]

            async def aged_and_read() -> bool:
                # Trimming waits for every reader to say it has read past what it trims, and
                # the age bound is judged by Redis's clock (and ours, for the replay).
                seconds, micros = await redis.time()
                now_ms = min(seconds * 1000 + micros // 1000, int(time.time() * 1000))
                reports = cast("list[bytes]", await redis.hvals(backend.readers_key))
                read = all(_position(r) >= _position(newest) for r in reports)
                return bool(reports) and read and now_ms > newest_ms + 200

            deadline = time.monotonic() + 10
            while not await aged_and_read():
                assert time.monotonic() < deadline, "the events never aged out"
                await asyncio.sleep(0.02)
            [new] = await backend.append(events("new"))
            replay = await backend.since("old-10400", new.position)
            assert not replay.found  # it aged out: the subscriber must hear of a gap
            assert [e.id for e in replay.events] == ["new"]
            # Every id the index holds still points into the stream, however much aged out.
            for _ in range(2):
                await backend.append(events(None))
            index = await redis.hlen(backend.index_key)
            assert index == await redis.xlen(backend.stream_key) == 3
        finally:
            await backend.close()

    asyncio.run(go())


def _position(entry_id: str | bytes) -> tuple[int, int]:
    """A stream id's order; a reader's report is "<id> <when>"."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.split(" ")[0].partition("-")
    return int(ms), int(seq or 0)


def test_an_id_history_holds_is_stored_once() -> None:
    async def go() -> None:
        backend, sunk = await started(history_size=3)
        try:
            first = await backend.append(events("a", "b"))
            again = await backend.append(
                [Event(("other",), "retry", id="a"), *events("c"), Event(("t",), "x", id="c")]
            )
            # The retry is answered with what was stored: same id, same position, same data.
            assert again[0] == first[0]
            assert again[0].data == "d"
            assert again[2] == again[1]  # a repeat within a batch repeats its first
            await until(lambda: len(sunk) >= 3, "the reader missed events")
            await backend.append(events("d"))
            await until(lambda: len(sunk) >= 4, "the reader missed 'd'")
            assert [e.id for e in sunk] == ["a", "b", "c", "d"]
            # History holds the last 3 (b, c, d): 'a' is no longer in it, so it is new again.
            [renewed] = await backend.append(events("a", data="new"))
            assert renewed.position > first[0].position
            assert renewed.data == "new"
            replay = await backend.since("c", renewed.position)
            assert [e.id for e in replay.events] == ["d", "a"]
        finally:
            await backend.close()

    asyncio.run(go())


def test_broadcasts_take_no_room_from_history_and_stay_bounded() -> None:
    async def go() -> None:
        backend = RedisBackend(redis_store(), history_size=2000)  # no reader holds trimming
        try:
            stored = await backend.append(events(*(f"s{i}" for i in range(2000))))
            for _ in range(3):
                await backend.broadcast([Event(("clock",), "tick")] * 1000)
            replay = await backend.since(EARLIEST, stored[-1].position, 1 << 30)
            assert [e.id for e in replay.events] == [e.id for e in stored]
            # No reader follows this stream: a broadcast leaves at once, history stays whole.
            assert await backend._redis.xlen(backend.stream_key) == backend.maxlen
        finally:
            await backend.close()

    asyncio.run(go())


def test_a_redis_that_is_not_there_did_not_store_it() -> None:
    """Refused at connect, the command never went out: 'not stored' (503), not 'unknown'."""

    async def go() -> None:
        backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0")
        try:
            with pytest.raises(ConnectionError) as refused:
                await backend.append(events("x"))
            assert not isinstance(refused.value, OutcomeUnknown)
        finally:
            await backend.close()

    asyncio.run(go())


def test_a_restart_behind_many_broadcasts_knows_the_newest_stored_event() -> None:
    async def go() -> None:
        url = redis_store()
        first = RedisBackend(url, 100)
        [stored] = await first.append(events("kept"))
        # More broadcasts than start() first looks back at, as a node's subscription events
        # leave them while no reader has read them yet.
        for i in range(40):
            await first._redis.xadd(
                first.stream_key,
                {
                    "id": f"live-{i}",
                    "live": "1",
                    "topics": '["t"]',
                    "data": "",
                    "private": "0",
                    "type": "",
                    "retry": "",
                },
            )
        await first.close()
        again = RedisBackend(url, 100)
        try:
            newest = await again.start(lambda batch: None)
            assert again.last_id == "kept"
            assert newest >= stored.position
            # A broadcast carries the newest stored position, not 0.
            [sent] = await again.broadcast(events(None))
            assert sent.position == stored.position
        finally:
            await again.close()

    asyncio.run(go())
