"""The engine in process: coalescing, shared buffers, privacy, and the replay handshake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from ssehub import Event, Hub, MemoryBackend, StoredEvent
from ssehub.backends import EARLIEST, REPLAY_PAGE, Replay, transient
from ssehub.commits import HubBusy
from ssehub.settings import DEFAULTS
from ssehub.sse import Decoder
from ssehub.subscriber import Phase, Subscriber, SubscriberClosed

from .support import until


class FakeStream:
    """Records every write; ``drain`` can be made to wait, like a slow socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.aborted = False
        self.gate: asyncio.Event | None = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def abort(self) -> None:
        self.aborted = True

    async def drain(self) -> None:
        if self.gate is not None:
            await self.gate.wait()

    def ids(self) -> list[str]:
        decoder = Decoder()
        return [e.id for e in decoder.feed(b"".join(self.writes[1:]))]


def preamble(replay: Replay | None) -> bytes:
    return b":\n"


async def started(history: int = 100) -> Hub:
    hub = new_hub(MemoryBackend(history_size=history))
    await hub.start()
    return hub


def new_hub(backend: MemoryBackend, max_buffer: int = DEFAULTS.max_write_buffer) -> Hub:
    """A hub whose every fan-out runs in the loop iteration that accepted its events, before
    the publisher's future resolves (``max_coalesce=0``), so a test may look right after an
    ``await``. With the default, a fan-out that follows a costly one (a loaded machine makes
    any one look costly) waits for company, and a subscriber joining meanwhile replays only
    what was dispatched: correct, but not what these tests set up."""
    return Hub(backend, heartbeat=0, max_buffer=max_buffer, max_coalesce=0)


async def attach(
    hub: Hub,
    topics: Sequence[str],
    allowed: frozenset[str] | None = None,
    last_event_id: str | None = None,
) -> FakeStream:
    stream = FakeStream()
    await hub.subscribe(Subscriber(stream, tuple(topics), allowed), last_event_id, preamble)
    return stream


def test_one_write_per_subscriber_per_iteration_and_shared_bytes() -> None:
    async def go() -> None:
        hub = await started()
        streams = [await attach(hub, ["a"]) for _ in range(50)]
        futures = [hub.publish(Event(("a",), f"e{i}")) for i in range(20)]
        await asyncio.gather(*futures)
        for stream in streams:
            assert len(stream.writes) == 2  # the preamble, then one write for all 20 events
            assert stream.ids() == [f.result().id for f in futures]
        # Subscribers with the same view got the very same bytes object: encoded and joined once.
        assert len({id(s.writes[1]) for s in streams}) == 1
        assert hub.fanout.deliveries == 50 * 20

    asyncio.run(go())


def test_routing_exact_template_all_and_once_per_event() -> None:
    async def go() -> None:
        hub = await started()
        exact = await attach(hub, ["https://example.com/books/1"])
        template = await attach(hub, ["https://example.com/books/{id}"])
        everything = await attach(hub, ["*"])
        both = await attach(hub, ["https://example.com/books/1", "https://example.com/books/{id}"])
        other = await attach(hub, ["https://example.com/authors/{id}"])
        alternate = await attach(hub, ["urn:alt"])
        stored = await hub.publish(Event(("https://example.com/books/1", "urn:alt"), "x"))
        await until(lambda: bool(alternate.ids()), "the fan-out")
        for stream in (exact, template, everything, both, alternate):
            assert stream.ids() == [stored.id]
        assert other.ids() == []

    asyncio.run(go())


def test_private_updates_need_matching_claims() -> None:
    async def go() -> None:
        hub = await started()
        anonymous = await attach(hub, ["*"])
        unrelated = await attach(hub, ["*"], frozenset({"https://example.com/other"}))
        allowed = await attach(hub, ["*"], frozenset({"https://example.com/users/foo/{?topic}"}))
        topics = (
            "https://example.com/books/1",
            "https://example.com/users/foo/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1",
        )
        private = await hub.publish(Event(topics, "secret", private=True))
        public = await hub.publish(Event(topics, "public"))
        assert allowed.ids() == [private.id, public.id]
        assert anonymous.ids() == [public.id]
        assert unrelated.ids() == [public.id]

    asyncio.run(go())


def test_resume_holds_live_events_without_gap_or_duplicate() -> None:
    async def go() -> None:
        hub = await started()
        first = [await hub.publish(Event(("t",), str(i))) for i in range(5)]
        stream = FakeStream()
        stream.gate = asyncio.Event()  # the replay's drain blocks: live events must be held
        sub = Subscriber(stream, ("t",), None)
        task = asyncio.create_task(hub.subscribe(sub, first[1].id, preamble))
        await until(lambda: len(stream.writes) == 2, "the preamble and the replay")
        live = [await hub.publish(Event(("t",), f"live{i}")) for i in range(3)]
        await until(lambda: sub.held_size > 0, "live events held")  # not written: replay waits
        assert len(stream.writes) == 2
        stream.gate.set()
        replay = await task
        assert replay is not None and replay.found
        later = await hub.publish(Event(("t",), "later"))
        expected = [e.id for e in first[2:] + live + [later]]
        assert stream.ids() == expected

    asyncio.run(go())


def test_evicted_id_is_reported_not_found() -> None:
    async def go() -> None:
        hub = await started(history=3)
        events = [await hub.publish(Event(("t",), str(i))) for i in range(6)]
        stream = FakeStream()
        replay = await hub.subscribe(Subscriber(stream, ("t",), None), events[0].id, preamble)
        assert replay is not None and not replay.found
        assert stream.ids() == [e.id for e in events[3:]]
        earliest = FakeStream()
        replay = await hub.subscribe(Subscriber(earliest, ("t",), None), EARLIEST, preamble)
        assert replay is not None and replay.found
        assert earliest.ids() == [e.id for e in events[3:]]

    asyncio.run(go())


def test_history_lost_between_replay_pages_is_announced() -> None:
    async def go() -> None:
        hub = await started(history=4)
        big = "x" * (REPLAY_PAGE * 5 // 8)  # a page holds two of these
        old = [await hub.publish(Event(("t",), big)) for _ in range(4)]
        stream = FakeStream()
        stream.gate = asyncio.Event()  # the first page waits to drain ...
        task = asyncio.create_task(
            hub.subscribe(Subscriber(stream, ("t",), None), EARLIEST, preamble)
        )
        await asyncio.sleep(0)
        assert stream.writes[1:]  # the first page, waiting to drain
        live = [await hub.publish(Event(("t",), "live")) for _ in range(4)]  # ... and old[2:] go
        stream.gate.set()
        await task
        events = Decoder().feed(b"".join(stream.writes[1:]))
        gap = events.pop(2)
        assert gap.event == "ssehub.gap"
        assert [e.id for e in events] == [old[0].id, old[1].id, *(e.id for e in live)]
        assert json.loads(gap.data)["requested"] == old[1].id

    asyncio.run(go())


class _FailingPages(MemoryBackend):
    """History whose second page cannot be read (the store went away mid-replay)."""

    async def since(self, after: str | int, upto: int, limit: int = REPLAY_PAGE) -> Replay:
        if isinstance(after, int):
            raise OSError("the store went away")
        return await super().since(after, upto, limit)


def test_history_failing_mid_replay_closes_the_stream() -> None:
    """The head is out, so no 503 can be sent: the stream is cut, and the client resumes
    from the last event it got (never a silent hole, never a stuck subscriber)."""

    async def go() -> None:
        hub = new_hub(_FailingPages())
        await hub.start()
        for _ in range(4):
            await hub.publish(Event(("t",), "x" * (REPLAY_PAGE * 5 // 8)))
        stream = FakeStream()
        with pytest.raises(ConnectionResetError):
            await hub.subscribe(Subscriber(stream, ("t",), None), EARLIEST, preamble)
        assert stream.aborted
        assert hub.subscriber_count == 0
        assert len(Decoder().feed(b"".join(stream.writes[1:]))) == 2  # the first page

    asyncio.run(go())


class _StalePositions(MemoryBackend):
    """Broadcasts carrying an older position, as one travelling apart from the stream may."""

    async def broadcast(self, events: Sequence[Event]) -> list[StoredEvent]:
        sent = [transient(event, 0, 0.0) for event in events]
        if self._sink is not None:
            self._sink(sent)
        return sent


def test_a_broadcast_never_moves_the_replay_point_back() -> None:
    async def go() -> None:
        hub = new_hub(_StalePositions())
        await hub.start()
        stored = await hub.publish(Event(("t",), "kept"))
        await hub.announce(Event(("t",), "now"))
        stream = await attach(hub, ["t"], last_event_id=EARLIEST)
        assert stream.ids() == [stored.id]

    asyncio.run(go())


def test_replay_that_falls_too_far_behind_is_dropped() -> None:
    async def go() -> None:
        hub = new_hub(MemoryBackend(), max_buffer=1000)
        await hub.start()
        await hub.publish(Event(("t",), "old"))
        stream = FakeStream()
        stream.gate = asyncio.Event()
        sub = Subscriber(stream, ("t",), None)
        task = asyncio.create_task(hub.subscribe(sub, EARLIEST, preamble))
        await until(lambda: len(stream.writes) == 2, "the preamble and the replay")
        for _ in range(20):
            await hub.publish(Event(("t",), "x" * 100))
        assert stream.aborted
        assert hub.subscriber_count == 0
        stream.gate.set()
        await task

    asyncio.run(go())


def test_detach_during_fan_out_and_view_cleanup() -> None:
    async def go() -> None:
        hub = await started()
        streams = [await attach(hub, ["t"]) for _ in range(3)]
        assert hub.subscriber_count == 3
        subs = next(iter(hub.views.by_key.values())).live
        for sub in list(subs):
            hub.detach(sub)
            hub.detach(sub)  # twice is harmless
        assert hub.subscriber_count == 0
        assert not hub.views.by_key
        await hub.publish(Event(("t",), "nobody"))
        assert all(len(s.writes) == 1 for s in streams)

    asyncio.run(go())


def test_publish_failure_reaches_every_publisher_of_the_batch() -> None:
    class Flaky(MemoryBackend):
        broken = True

        async def append(self, events: Sequence[Event]) -> list[StoredEvent]:
            if self.broken:
                raise ConnectionError("disk on fire")
            return await super().append(events)

    async def go() -> None:
        backend = Flaky()
        hub = new_hub(backend)
        await hub.start()
        stream = await attach(hub, ["t"])
        futures = [hub.publish(Event(("t",))) for _ in range(3)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(r, ConnectionError) for r in results)
        assert stream.ids() == []
        backend.broken = False  # the commit chain goes on after a failed batch
        stored = await hub.publish(Event(("t",)))
        assert stream.ids() == [stored.id]

    asyncio.run(go())


def test_subscribe_writes_its_preamble_or_raises() -> None:
    """A subscriber closed while its history is read gets nothing written and the caller
    hears it (SubscriberClosed); before, subscribe returned as if it had started."""

    class SlowHistory(MemoryBackend):
        gate: asyncio.Event | None = None

        async def since(self, after: str | int, upto: int, limit: int = REPLAY_PAGE) -> Replay:
            assert self.gate is not None
            await self.gate.wait()
            return await super().since(after, upto, limit)

    async def go() -> None:
        backend = SlowHistory()
        backend.gate = asyncio.Event()
        hub = new_hub(backend)
        await hub.start()
        stream = FakeStream()
        sub = Subscriber(stream, ("t",), None)
        task = asyncio.create_task(hub.subscribe(sub, EARLIEST, preamble))
        deadline = asyncio.get_running_loop().time() + 5
        while sub.phase is Phase.NEW:  # registered first, then history is read
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0)
        assert sub.phase is Phase.REPLAYING
        hub.detach(sub)  # it leaves while history is read
        assert hub.subscriber_count == 0
        backend.gate.set()
        with pytest.raises(SubscriberClosed):
            await task
        assert stream.writes == []
        assert not sub.live
        with pytest.raises(SubscriberClosed):  # a closed subscriber cannot come back
            await hub.subscribe(sub, None, preamble)

    asyncio.run(go())


def test_a_burst_of_publishes_goes_to_the_store_in_bounded_batches() -> None:
    class Recording(MemoryBackend):
        batches: list[int] = []

        async def append(self, events: Sequence[Event]) -> list[StoredEvent]:
            self.batches.append(len(events))
            return await super().append(events)

    async def go() -> None:
        backend = Recording(history_size=20_000)
        hub = Hub(backend, heartbeat=0)
        await hub.start()
        futures = [hub.publish(Event(("t",), id=f"e{i}")) for i in range(10_000)]
        stored = await asyncio.gather(*futures)
        assert [e.id for e in stored] == [f"e{i}" for i in range(10_000)]  # in order, all
        assert sum(backend.batches) == 10_000
        assert max(backend.batches) <= 4096  # one transaction, one Redis script: bounded
        assert hub.commits.pending_bytes == 0

    asyncio.run(go())


class _SlowBroadcasts(MemoryBackend):
    """Each broadcast takes a while (a Redis round trip under load, say); counts the calls."""

    def __init__(self) -> None:
        super().__init__(history_size=10)
        self.calls = 0
        self.gate = asyncio.Event()

    async def broadcast(self, events: Sequence[Event]) -> list[StoredEvent]:
        self.calls += 1
        await self.gate.wait()
        return await super().broadcast(events)


def test_a_flood_of_announcements_is_one_task_bounded_and_in_order() -> None:
    async def go() -> None:
        backend = _SlowBroadcasts()
        hub = new_hub(backend)
        await hub.start()
        stream = await attach(hub, ["t"])
        before = len(asyncio.all_tasks())
        asked = [hub.announce(Event(("t",), "n0", id="n0"))]
        await asyncio.sleep(0)  # the announcer starts, and waits in the slow broadcast
        asked += [hub.announce(Event(("t",), f"n{i}", id=f"n{i}")) for i in range(1, 10_501)]
        assert len(asyncio.all_tasks()) <= before + 1  # one announcer, not a task each
        refused = [f for f in asked if f.done() and isinstance(f.exception(), HubBusy)]
        assert len(refused) == 500  # 10,000 wait at most
        backend.gate.set()
        sent = await asyncio.gather(*(f for f in asked if f not in refused))
        assert [s[0].data for s in sent] == [f"n{i}" for i in range(10_001)]
        assert backend.calls == 2  # the first alone, then everything asked meanwhile

        def data() -> list[str]:
            return [e.data for e in Decoder().feed(b"".join(stream.writes[1:]))]

        await until(lambda: len(data()) == 10_001, "every notice on the stream")
        assert data() == [f"n{i}" for i in range(10_001)]
        await hub.close()

    asyncio.run(go())
