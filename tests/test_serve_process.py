"""What ``serve`` changes in its process while it runs, and gives back when it stops."""

from __future__ import annotations

import asyncio
import socket
import sys

from ssehub import Settings
from ssehub.server import serve

from .support import KEY


def test_the_gil_switch_interval_is_short_while_serving_and_restored_after() -> None:
    """A store's thread (SQLite) hands each commit back through the GIL, which a busy loop
    lets go of only every switch interval: serving shortens it, stopping restores it."""
    settings = Settings(port=0, publisher_jwt_key=KEY, subscriber_jwt_key=KEY, demo=False)
    before = sys.getswitchinterval()
    seen: list[float] = []

    async def run() -> None:
        stop = asyncio.Event()

        def started(sockets: list[socket.socket]) -> None:
            seen.append(sys.getswitchinterval())
            stop.set()

        await serve(settings, started=started, stop=stop, clock=False)

    asyncio.run(run())
    assert before > 0.0005 and seen == [0.0005]
    assert sys.getswitchinterval() == before
