"""What the hub keeps per published topic, measured in a hub serving real sockets."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import httpx

from ssehub import Settings
from ssehub.server import serve

from .support import HUB, KEY, free_port, make_token

HISTORY = 1 << 20
ROUTES = 4 << 20  # the route cache's bound (RouteIndex.max_bytes)


@contextmanager
def hub_in_this_process(history_max_bytes: int) -> Iterator[int]:
    """A hub on a free loopback port, served by a thread of this process (so tracemalloc
    sees what it holds); its port."""
    port = free_port()
    settings = Settings(
        port=port,
        publisher_jwt_key=KEY,
        subscriber_jwt_key=KEY,
        demo=False,
        history_max_bytes=history_max_bytes,
        history_size=100_000,
    )
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def started(sockets: list[socket.socket]) -> None:
        ready.set()

    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(serve(settings, started=started, stop=stop, clock=False),),
    )
    thread.start()
    try:
        assert ready.wait(10), "the hub did not start"
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_publishes_of_many_short_topics_hold_no_more_than_history_and_routes_bounds() -> None:
    """999 distinct topics per publish: the route cache counted their characters (10 each)
    but not its index entry per topic (a set, a dict slot, ~30x that); 60 such publishes
    grew the hub by ~15 MiB, past both bounds together."""
    with hub_in_this_process(HISTORY) as port:
        headers = {
            "Authorization": f"Bearer {make_token(publish=['*'])}",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:

            def publish(i: int) -> None:
                form = [("topic", f"{i:04d}-{j:03d}") for j in range(999)] + [("data", "x")]
                assert client.post(HUB, content=urlencode(form)).status_code == 200

            publish(0)  # the first request's one-time allocations are not what is measured
            gc.collect()
            tracemalloc.start()
            try:
                before, _ = tracemalloc.get_traced_memory()
                for i in range(1, 61):
                    publish(i)
                gc.collect()
                held, _ = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    grew = held - before
    # The request buffers and the client add a few hundred KiB; 1.2x leaves room for them.
    assert grew < (HISTORY + ROUTES) * 1.2, f"the hub grew by {grew >> 10} KiB"
