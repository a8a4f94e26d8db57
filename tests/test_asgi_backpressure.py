"""The ASGI face's bound on a stopped reader, measured inside uvicorn: what the hub holds for a
subscriber, what it has handed to ``send`` and what uvicorn's transport still buffers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import uvicorn

from ssehub import Settings
from ssehub.asgi import HubApp, Message, Receive, Scope, Send

from .support import HUB, KEY, HubProcess, free_port, make_token, metric, wait_until

API = "/.well-known/mercure/subscriptions"
BOUND = 1 << 20
EVENT = 60_000
# Past the bound by what one fan-out write added (an event or two of a burst), plus what
# uvicorn may hold: its 64 KiB high-water mark and one send of at most as much. Before sends were
# sliced and counted, a stopped reader's peak reached 1.8 MB here.
SLACK = 2 * 65536 + 2 * EVENT


class Watched:
    """``HubApp`` under a probe that samples, every few milliseconds, each stream's bytes not
    yet delivered to the socket: the hub's buffer, sends under way and uvicorn's buffer."""

    def __init__(self, hub: HubApp) -> None:
        self.hub = hub
        self.in_flight: dict[int, int] = {}
        self.transports: dict[int, Any] = {}
        self.worst = 0
        self._sampler: asyncio.Task[None] | None = None

    def pending(self) -> int:
        """The most one stream holds in the hub, and the most one connection has in a send or
        in uvicorn (a bound on what one subscriber holds: the reader that keeps up has bytes
        buffered too while the machine is busy, and they are not the stopped one's)."""
        buffered = max((stream.size for stream in self.hub._streams), default=0)
        # A send under way counts in its stream's size until it returns: uvicorn's buffer only.
        sent = [t.get_write_buffer_size() for t in self.transports.values()]
        return buffered + max(sent, default=0)

    def watch_drops(self) -> None:
        """Sample at each drop too, before it frees the buffer: the peak."""
        hub = self.hub.hub
        drop = hub.drop_slow

        def sampled(sub: Any) -> None:
            self.worst = max(self.worst, self.pending())
            drop(sub)

        hub.drop_slow = sampled  # type: ignore[method-assign]

    async def _sample(self) -> None:
        self.watch_drops()
        while True:
            self.worst = max(self.worst, self.pending())
            await asyncio.sleep(0.002)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._sampler is None and scope["type"] == "http":
            self._sampler = asyncio.get_running_loop().create_task(self._sample())
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != HUB:
            await self.hub(scope, receive, send)
            return
        key = id(scope)
        # uvicorn's send is a method of its request cycle, which holds the connection's transport.
        cycle: Any = send
        self.transports[key] = cycle.__self__.transport

        async def probed(message: Message) -> None:
            self.in_flight[key] = len(message.get("body", b""))
            try:
                await send(message)
            finally:
                self.in_flight[key] = 0

        try:
            await self.hub(scope, receive, probed)
        finally:
            self.transports.pop(key, None)
            self.in_flight.pop(key, None)


@contextlib.contextmanager
def watched_hub() -> Iterator[tuple[HubProcess, Watched]]:
    settings = Settings(
        publisher_jwt_key=KEY,
        subscriber_jwt_key=KEY,
        anonymous=True,
        heartbeat=0,
        demo=False,
        history_size=0,
        max_write_buffer=BOUND,
        subscriptions=True,
    )
    app = Watched(HubApp(settings))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "uvicorn started")
        hub = HubProcess(port, None)  # type: ignore[arg-type]
        hub.publisher_token = make_token(publish=["*"])
        yield hub, app
    finally:
        server.should_exit = True
        thread.join(10)


async def _burst(h: HubProcess, client: httpx.AsyncClient, count: int) -> list[str]:
    """``count`` publishes at once: the hub coalesces them into one write per subscriber."""
    auth = {"Authorization": f"Bearer {h.publisher_token}"}
    answers = await asyncio.gather(
        *(
            client.post(h.url, data={"topic": "t", "data": "x" * EVENT}, headers=auth)
            for _ in range(count)
        )
    )
    return [a.text for a in answers]


def active(h: HubProcess) -> int:
    """How many subscriptions the subscriptions API lists."""
    watch = jwt.encode({"mercure": {"subscribe": ["*"]}}, KEY, algorithm="HS256")
    answer = httpx.get(h.base + API, headers={"Authorization": f"Bearer {watch}"})
    return len(answer.json()["subscriptions"])


def test_asgi_stopped_reader_is_closed_within_the_bound() -> None:
    """A reader that stopped is dropped once the hub holds the bound for it, and its
    subscription ends then, though uvicorn's send for it stays blocked (it used to stay
    active, its template budget held and no end announced, until the client read or left)."""

    async def publish(h: HubProcess) -> list[str]:
        async with httpx.AsyncClient() as client:
            return [i for _ in range(8) for i in await _burst(h, client, 16)]

    with (
        watched_hub() as (h, app),
        h.subscribe("t", rcvbuf=4096) as stopped,
        h.subscribe("t") as reader,
    ):
        got: list[str] = []
        reading = threading.Thread(target=lambda: got.extend(e.id for e in reader.events(128)))
        reading.start()
        ids = asyncio.run(publish(h))
        reading.join(10)
        # The reader gets every event, the stopped one or not.
        assert sorted(got) == sorted(ids), "the reader missed events"
        assert metric(h.base, "ssehub_slow_consumers_closed_total") == 1
        assert app.worst <= BOUND + SLACK, f"{app.worst} bytes held for one stopped reader"
        assert any(app.in_flight.values()), "the dropped stream's send is not blocked"
        assert active(h) == 1, "the dropped subscription is still active"
        # Once it reads again, its response ends: it resumes with Last-Event-ID.
        assert stopped.wait_closed(5)
        assert active(h) == 1


def test_asgi_dropped_reader_that_leaves_frees_its_send() -> None:
    """A dropped reader whose send is blocked and that then goes away: uvicorn's send returns,
    the ASGI call ends and nothing of it is left; the other reader is undisturbed."""

    async def publish(h: HubProcess) -> list[str]:
        async with httpx.AsyncClient() as client:
            return [i for _ in range(8) for i in await _burst(h, client, 16)]

    with watched_hub() as (h, app), h.subscribe("t") as reader:
        stopped = h.subscribe("t", rcvbuf=4096)
        got: list[str] = []
        reading = threading.Thread(target=lambda: got.extend(e.id for e in reader.events(128)))
        reading.start()
        asyncio.run(publish(h))
        reading.join(10)
        assert len(got) == 128
        assert metric(h.base, "ssehub_slow_consumers_closed_total") == 1
        assert len(app.transports) == 2, "the dropped stream's ASGI call ended before it left"
        stopped.close()
        wait_until(lambda: len(app.transports) == 1, "the dropped stream's ASGI call to end")
        assert len(app.hub._streams) == 1
        probe = h.publish("t", "probe").text
        assert [e.id for e in reader.events(1)] == [probe]
