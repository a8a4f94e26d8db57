"""Replay from a durable store, over real sockets: bounded memory, every event once."""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path

import pytest

from ssehub.backends import open_backend
from ssehub.backends.redis import RedisBackend
from ssehub.events import Event

from .backends import store_url
from .support import HubProcess, SSEClient, start_hub

EVENT_DATA = 16 * 1024
EVENTS = 1280  # 20 MiB of history
STALLED = 20


def rss(pid: int) -> int:
    """Resident bytes of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


async def fill(store: str) -> int:
    """Write the history straight into the store before a hub opens it; its wire bytes."""
    backend = open_backend(store, EVENTS, 0.0)
    await backend.start(lambda batch: None)
    try:
        stored = await backend.append(
            [
                Event(("big",), f"{i:06d}" + "x" * (EVENT_DATA - 6), id=f"e{i}")
                for i in range(EVENTS)
            ]
        )
    finally:
        await backend.close()
    return sum(len(e.wire) for e in stored)


def subscribe_earliest(hub: HubProcess) -> SSEClient:
    # A small receive buffer keeps what the kernel soaks up from a stalled reader small.
    return hub.subscribe("big", last_event_id="earliest", rcvbuf=16 * 1024)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_stalled_replays_hold_a_page_each_not_the_history(kind: str) -> None:
    """Many subscribers replaying a long history without reading cost a bounded amount of
    the hub's memory each, not a copy of the history each (+814 MiB on SQLite before paging)."""
    with store_url(kind) as store:
        stalled_replays(store)


def stalled_replays(store: str) -> None:
    history = asyncio.run(fill(store))
    hub = start_hub(
        "--anonymous",
        "--no-demo",
        "--heartbeat",
        "0",
        "--dispatch-timeout",
        "0",
        "--store",
        store,
        "--history-size",
        str(EVENTS),
    )
    clients: list[SSEClient] = []
    try:
        # One full replay first, so the baseline includes what any replay warms up once
        # (SQLite's page cache, the code paths), and to check it is whole and in order.
        with subscribe_earliest(hub) as reader:
            got = reader.events(EVENTS, timeout=60)
        assert [e.id for e in got] == [f"e{i}" for i in range(EVENTS)]
        assert all(e.data.startswith(f"{i:06d}") for i, e in enumerate(got))
        before = rss(hub.proc.pid)
        for _ in range(STALLED):
            client = subscribe_earliest(hub)
            clients.append(client)
            # Its first event is written only once the hub has read what it reads before
            # writing (the whole history, before paging); then the client stops reading.
            [first] = client.events(1, timeout=60)
            assert first.id == "e0"
        grown = rss(hub.proc.pid) - before
    finally:
        for client in clients:
            client.close()
        hub.stop()
    # Each stalled replay may hold a page and a socket buffer, never the history: together
    # less than one copy of it, where one copy each is STALLED times that.
    assert grown < history, f"RSS grew {grown >> 20} MiB over a {history >> 20} MiB history"


def test_redis_replay_reads_a_page_not_the_stream() -> None:
    """Redis keeps a stream longer than a short history (it carries live events between
    nodes); finding where history starts once read every entry before it, per page."""
    with store_url("redis") as store:
        asyncio.run(_short_history(store))


async def _short_history(store: str) -> None:
    backend = RedisBackend(store, history_size=10)
    await backend.start(lambda batch: None)
    try:
        stored = await backend.append(
            [Event(("t",), "x" * 100_000, id=f"f{i}") for i in range(300)]
        )  # 30 MB in the stream, 1 MB of it history
        upto = stored[-1].position
        tracemalloc.start()
        try:
            kept = await backend.since("f295", upto, 1 << 20)
            gone = await backend.since("f100", upto, 1 << 20)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert kept.found and [e.id for e in kept.events] == ["f296", "f297", "f298", "f299"]
        assert not gone.found and gone.events[0].id == "f290"
        # Reading history's start from the stream's entries peaked at 57 MiB per call here.
        assert peak < 24 << 20, f"two replays read {peak >> 20} MiB"
    finally:
        await backend._redis.delete(backend.stream_key, backend.index_key)
        await backend.close()
