"""A fan-out round takes in a bounded number of bytes: past ``max_round_intake``, publishes
wait for the round to end (their answers too), then go on in order, nothing lost."""

from __future__ import annotations

import asyncio

from ssehub import Event, Hub, MemoryBackend

from .test_hub import FakeStream, attach


async def _hub(intake: int) -> Hub:
    """Slices of 32 writes (``write_slice`` 0): a round over hundreds of members takes many
    loop iterations, as one over thousands of sockets does."""
    hub = Hub(
        MemoryBackend(history_size=1000), heartbeat=0, max_coalesce=0, max_round_intake=intake
    )
    hub.fanout.write_slice = 0.0
    await hub.start()
    return hub


async def _round_under_way(hub: Hub, streams: list[FakeStream]) -> None:
    for _ in range(100):
        if len(streams[0].writes) >= 2 and len(streams[-1].writes) == 1:
            return
        await asyncio.sleep(0)
    raise AssertionError("no round under way")


def test_publishes_past_the_intake_wait_for_the_round_then_arrive_in_order() -> None:
    async def go() -> None:
        hub = await _hub(intake=100)  # less than the first event: the round is full
        streams = [await attach(hub, ["a"]) for _ in range(400)]
        first = hub.publish(Event(("a",), "x" * 150, id="e0"))
        await _round_under_way(hub, streams)
        held = [hub.publish(Event(("a",), "x" * 150, id=f"e{i}")) for i in range(1, 6)]
        for _ in range(3):
            await asyncio.sleep(0)
        assert first.done() and not any(f.done() for f in held)  # the answers wait too
        assert len(streams[-1].writes) == 1  # ... while the round goes on
        await asyncio.gather(*held)
        await asyncio.sleep(0)
        for _ in range(200):
            if all(len(s.ids()) == 6 for s in streams):
                break
            await asyncio.sleep(0)
        ids = [f"e{i}" for i in range(6)]
        assert all(stream.ids() == ids for stream in streams)
        await hub.close()

    asyncio.run(go())


def test_without_a_bound_publishes_join_the_round_under_way() -> None:
    async def go() -> None:
        hub = await _hub(intake=0)
        streams = [await attach(hub, ["a"]) for _ in range(400)]
        hub.publish(Event(("a",), "x" * 150, id="e0"))
        await _round_under_way(hub, streams)
        later = [hub.publish(Event(("a",), "x" * 150, id=f"e{i}")) for i in range(1, 6)]
        for _ in range(3):
            await asyncio.sleep(0)
        assert all(f.done() for f in later) and len(streams[-1].writes) == 1
        await hub.close()

    asyncio.run(go())
