"""The once-a-second deadline sweep goes in slices: every connection is checked each round,
and the loop runs between slices, so ten thousand checks never stall the streams at once."""

from __future__ import annotations

import asyncio
import time
from typing import cast

from ssehub.server.connection import Registered
from ssehub.server.registry import ConnectionRegistry
from ssehub.settings import Settings


class SlowCheck:
    """A connection whose deadline check costs 50 us (a ``TCP_INFO`` read, say)."""

    address: str | None = None

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def check(self, now: float) -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < 50e-6:
            pass
        self.log.append(self.name)

    def drain_close(self) -> None:  # pragma: no cover - not reached here
        pass

    def abort(self) -> None:  # pragma: no cover - not reached here
        pass


def test_a_round_checks_each_connection_once_in_slices_with_the_loop_running_between() -> None:
    async def go() -> None:
        registry = ConnectionRegistry(Settings())
        log: list[str] = []
        conns = [SlowCheck(log, f"c{i}") for i in range(400)]  # 20 ms of checks in all
        registered = cast("list[Registered]", conns)  # what the sweep uses of them
        registry.connections.update(registered)
        # The round takes them from the end of its snapshot (the set's order): the first in
        # that order is checked last, so it can leave mid-round before its turn.
        gone = next(iter(registry.connections))
        loop = asyncio.get_running_loop()
        registry.start_sweep(every=0.05)
        interleaved = 0

        def tick() -> None:  # the rest of the loop's work, one callback per iteration
            nonlocal interleaved
            if log and len(log) < len(conns) - 1:
                interleaved += 1
            if gone in registry.connections and len(log) > 10:
                registry.connections.discard(gone)  # leaves mid-round: never checked
            if len(log) < len(conns) - 1:
                loop.call_soon(tick)

        loop.call_soon(tick)  # spins until the first round (in 50 ms) has checked them all
        for _ in range(300):
            if len(log) >= len(conns) - 1:
                break
            await asyncio.sleep(0.01)
        registry.stop_sweep()
        first_round = log[: len(conns) - 1]  # later rounds (every 50 ms) check them again
        assert sorted(first_round) == sorted(
            c.name for c, r in zip(conns, registered, strict=True) if r is not gone
        )
        assert interleaved >= 5  # slices of ~0.5 ms: the loop ran many times in the round

    asyncio.run(go())
