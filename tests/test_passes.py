"""Passes cut into slices: events that arrive during a pass join it for the members it has not
reached, and every member still gets every event once, in order, whoever comes and goes."""

from __future__ import annotations

import asyncio
import random
import time

from ssehub import Event, Hub, MemoryBackend
from ssehub.subscriber import Subscriber
from ssehub.topics import TopicMatcher
from ssehub.views import GONE, Pass, View

from .test_hub import FakeStream, attach, new_hub


async def sliced_hub() -> Hub:
    """A hub whose every slice ends after 32 writes: a pass over hundreds of subscribers
    takes many loop iterations, as one over tens of thousands of sockets does."""
    hub = new_hub(MemoryBackend(history_size=1000))
    hub.fanout.write_slice = 0.0
    await hub.start()
    return hub


async def member(hub: Hub, stream: FakeStream | None = None) -> tuple[Subscriber, FakeStream]:
    """A subscriber of "a" whose ``Subscriber`` the test keeps, to detach it."""
    stream = stream or FakeStream()
    sub = Subscriber(stream, ("a",), None)
    await hub.subscribe(sub, None, lambda replay: b":\n")
    return sub, stream


async def iterations(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def first_slice_written(stream: FakeStream) -> None:
    """Yield to the loop, one iteration at a time, until ``stream`` has its first event."""
    for _ in range(100):
        if len(stream.writes) >= 2:
            return
        await asyncio.sleep(0)
    raise AssertionError("the pass never began")


def test_an_event_arriving_during_a_pass_joins_it_for_members_not_yet_written() -> None:
    async def go() -> None:
        hub = await sliced_hub()
        streams = [await attach(hub, ["a"]) for _ in range(400)]
        first = hub.publish(Event(("a",), "one", id="one"))
        await first_slice_written(streams[0])  # the pass has begun
        assert len(streams[-1].writes) == 1  # ... and has not reached the last member
        second = hub.publish(Event(("a",), "two", id="two"))
        await asyncio.gather(first, second)
        await iterations(40)
        assert streams[0].writes[1:] == [streams[0].writes[1], streams[0].writes[2]]
        assert streams[0].ids() == ["one", "two"]
        # The last member got both in its one write: "two" did not wait for another pass.
        assert len(streams[-1].writes) == 2
        assert streams[-1].ids() == ["one", "two"]
        for stream in streams:
            assert stream.ids() == ["one", "two"]
        assert hub.fanout.deliveries == 800
        await hub.close()

    asyncio.run(go())


def test_a_publish_read_during_a_pass_joins_the_slice_after_next() -> None:
    """Memory appends without a task, right after the slice that was due: the members the
    following slice writes get an event published mid-pass in that same write. (A task
    appended it one loop iteration and one slice later.)"""

    async def go() -> None:
        hub = await sliced_hub()
        streams = [await attach(hub, ["a"]) for _ in range(400)]
        first = hub.publish(Event(("a",), "one", id="one"))
        await first_slice_written(streams[0])
        before = [len(stream.writes) for stream in streams]
        second = hub.publish(Event(("a",), "two", id="two"))  # as a read would, mid-pass
        await asyncio.sleep(0)  # the slice that was due, then the append
        before = [len(stream.writes) for stream in streams]
        await asyncio.sleep(0)  # the next slice
        reached = [s for s, n in zip(streams, before, strict=True) if len(s.writes) > n]
        assert reached, "no slice ran"
        for stream in reached:
            assert stream.ids() == ["one", "two"] and len(stream.writes) == 2
        await asyncio.gather(first, second)
        await hub.close()

    asyncio.run(go())


def test_every_member_gets_every_event_once_in_order_while_members_come_and_go() -> None:
    async def go() -> None:
        rng = random.Random(12)
        hub = await sliced_hub()
        stay = [await attach(hub, ["a"]) for _ in range(300)]
        leaving = [await member(hub) for _ in range(40)]
        left: list[FakeStream] = []
        joined: list[tuple[int, FakeStream]] = []  # after which publish
        published: list[str] = []
        futures = []
        for i in range(60):
            published.append(f"e{i}")
            futures.append(hub.publish(Event(("a",), f"data {i}", id=f"e{i}")))
            if i % 7 == 3:
                sub, stream = leaving.pop(rng.randrange(len(leaving)))
                hub.detach(sub)
                left.append(stream)
            if i % 9 == 5:
                joined.append((i, await attach(hub, ["a"])))
            await iterations(rng.randrange(4))
        await asyncio.gather(*futures)
        await iterations(100)
        for stream in stay + [stream for _, stream in leaving]:
            assert stream.ids() == published
        for stream in left:
            ids = stream.ids()
            assert ids == published[: len(ids)]  # what it got, from the start, in order
        assert any(len(stream.ids()) < len(published) for stream in left)
        for after, stream in joined:
            ids = stream.ids()
            if after == len(published) - 1:  # joined after the last publish was accepted
                continue
            assert ids, "a member that joined before later publishes got none of them"
            start = published.index(ids[0])
            assert start <= after + 1  # nothing published after it joined is missing
            assert ids == published[start:]  # a contiguous, ordered run to the end
        await hub.close()

    asyncio.run(go())


def test_members_leaving_mid_pass_are_never_written_again_and_others_miss_nothing() -> None:
    async def go() -> None:
        hub = await sliced_hub()
        subscribers = [await member(hub) for _ in range(200)]
        first = hub.publish(Event(("a",), "one", id="one"))
        await first_slice_written(subscribers[0][1])
        # Leave: one already written in this pass, one not yet reached.
        for sub, _ in (subscribers[1], subscribers[-1]):
            hub.detach(sub)
        writes_then = [len(stream.writes) for _, stream in subscribers]
        second = hub.publish(Event(("a",), "two", id="two"))
        await asyncio.gather(first, second)
        await iterations(40)
        for index, (_, stream) in enumerate(subscribers):
            if index in (1, len(subscribers) - 1):
                assert len(stream.writes) == writes_then[index]
            else:
                assert stream.ids() == ["one", "two"]
        await hub.close()

    asyncio.run(go())


def test_close_writes_what_was_accepted_even_mid_pass() -> None:
    async def go() -> None:
        hub = await sliced_hub()
        streams = [await attach(hub, ["a"]) for _ in range(300)]
        await hub.publish(Event(("a",), "one", id="one"))
        assert len(streams[-1].writes) == 1  # the pass is still going
        await hub.close()
        for stream in streams:
            assert stream.ids() == ["one"]

    asyncio.run(go())


class _Member:
    """Enough of a subscriber for a view's pass: its offset and its writes."""

    def __init__(self) -> None:
        self.sent = 0
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


class _NoDrops:
    max_buffer = 1 << 20

    def drop_slow(self, sub: Subscriber) -> None:
        raise AssertionError("nobody is slow here")


def test_view_pass_states_and_shared_bytes() -> None:
    view = View((frozenset({"a"}), None, None), TopicMatcher())
    members = [_Member() for _ in range(64)]
    for member in members:
        view.live[member] = None  # type: ignore[index]
    view.changed()
    view.append(b"A", 1, _NoDrops())
    assert view.flush(deadline=0.0) == (Pass.CUT, 32, 32)  # cut after 32 writes
    view.append(b"B", 1, _NoDrops())
    assert view.flush(deadline=float("inf")) == (Pass.AGAIN, 64, 64)  # 32 x "AB"
    assert all(m.writes == [b"AB"] for m in members[32:])
    assert view.flush(deadline=float("inf")) == (Pass.DONE, 32, 32)  # the first 32 get "B"
    assert all(m.writes == [b"A", b"B"] for m in members[:32])
    shared = {id(m.writes[-1]) for m in members[:32]}
    assert len(shared) == 1  # members at one offset share one bytes object
    assert view.flush(deadline=float("inf")) == (Pass.DONE, 0, 0)  # nothing left


class SlowStream(FakeStream):
    """A write that costs 10 us, like a socket's: a round over 200 takes 2 ms."""

    def write(self, data: bytes) -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < 10e-6:
            pass
        super().write(data)


def test_throughput_first_waits_before_the_next_round_and_still_delivers_everything() -> None:
    async def go() -> None:
        hub = Hub(MemoryBackend(history_size=1000), heartbeat=0, max_coalesce=0.05)
        hub.fanout.write_slice = 0.0
        await hub.start()
        streams = [(await member(hub, SlowStream()))[1] for _ in range(200)]
        first = hub.publish(Event(("a",), "one", id="one"))
        await first_slice_written(streams[0])
        await hub.publish(Event(("a",), "two", id="two"))  # joins the pass under way
        for _ in range(100):  # the pass ends; members it had passed wait for a round
            if isinstance(hub.fanout._walk_handle, asyncio.TimerHandle):
                break
            await asyncio.sleep(0)
        assert isinstance(hub.fanout._walk_handle, asyncio.TimerHandle)
        assert streams[0].ids() == ["one"] and streams[-1].ids() == ["one", "two"]
        await first
        for _ in range(200):
            if all(s.ids() == ["one", "two"] for s in streams):
                break
            await asyncio.sleep(0.005)
        assert all(s.ids() == ["one", "two"] for s in streams)
        await hub.close()

    asyncio.run(go())


def test_under_a_steady_stream_the_log_keeps_only_what_a_member_lacks() -> None:
    """Bytes arrive before every slice, so no pass ever ends with nothing new; each pass's end
    still lets go of what every member has."""
    view = View((frozenset({"a"}), None, None), TopicMatcher())
    members = [_Member() for _ in range(64)]
    for member in members:
        view.live[member] = None  # type: ignore[index]
    view.changed()
    sent = []
    for n in range(3000):
        data = b"%d," % n
        sent.append(data)
        view.append(data, 1, _NoDrops())
        view.flush(deadline=0.0)  # a slice of 32: a pass takes two
        assert len(view._log) <= 3  # bounded by a pass, not by the stream's length
    while view.flush(deadline=float("inf"))[0] is not Pass.DONE:
        pass
    assert all(b"".join(m.writes) == b"".join(sent) for m in members)


class _Looked(_Member):
    """A member that counts how often a pass looks at its offset."""

    def __init__(self) -> None:
        self.looks = 0
        self._sent = 0
        self.writes: list[bytes] = []

    @property
    def sent(self) -> int:
        self.looks += 1
        return self._sent

    @sent.setter
    def sent(self, value: int) -> None:
        self._sent = value


def test_members_coming_and_going_do_not_start_the_pass_again() -> None:
    """A connect or a disconnect during a pass over many members must not make the pass walk
    every member again: who joined has everything so far, who left is never written."""
    view = View((frozenset({"a"}), None, None), TopicMatcher())
    members = [_Looked() for _ in range(64)]
    for member in members:
        view.live[member] = None  # type: ignore[index]
    view.changed()
    view.append(b"A", 1, _NoDrops())
    assert view.flush(deadline=0.0)[0] is Pass.CUT  # 32 written
    newcomer = _Looked()
    newcomer.sent = view.end
    view.live[newcomer] = None  # type: ignore[index]
    view.changed()
    gone = members[40]
    del view.live[gone]  # type: ignore[arg-type]
    gone.sent = GONE
    view.changed()
    looks_before = [m.looks for m in members[:32]]
    assert view.flush(deadline=float("inf")) == (Pass.DONE, 31, 31)
    assert [m.looks for m in members[:32]] == looks_before  # not walked again
    assert gone.writes == [] and newcomer.writes == []
    assert all(m.writes == [b"A"] for m in members if m is not gone)
    view.append(b"B", 1, _NoDrops())  # the next pass has the members as they are now
    assert view.flush(deadline=float("inf")) == (Pass.DONE, 64, 64)
    assert newcomer.writes == [b"B"] and gone.writes == []
