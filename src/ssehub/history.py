"""Reading what a resuming subscriber missed: history a page at a time, each written and
drained before the next is read, and waiting for this node's fan-out to reach the
subscriber's last event when it came from a node further ahead."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .contract import REPLAY_PAGE, Backend, HistoryUnavailable, Replay
from .events import StoredEvent
from .mercure import gap_notice
from .subscriber import Phase, Subscriber
from .views import View

log = logging.getLogger("ssehub.hub")

_REPLAY_CHUNK = 64 * 1024
_CATCH_UP = 10.0  # seconds a resume waits for this node to reach the subscriber's event


def _framed(sub: Subscriber, data: bytes) -> bytes:
    """``data`` as ``sub``'s face frames a body write (replay and notices: one subscriber's)."""
    return data if sub.frame is None else sub.frame(data)


class History:
    """One hub's reader of its backend's history for subscribers that resume."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.waiting: list[tuple[int, asyncio.Future[None]]] = []  # position, reached

    def reached(self, dispatched: int) -> None:
        """The fan-out has dispatched up to ``dispatched``: wake who waited for it."""
        waiting, self.waiting = self.waiting, []
        for position, future in waiting:
            if future.done():
                continue
            if position <= dispatched:
                future.set_result(None)
            else:
                self.waiting.append((position, future))

    async def first_page(
        self, sub: Subscriber, last_event_id: str, upto: int, dispatched: Callable[[], int]
    ) -> tuple[Replay, int]:
        """The first page after ``last_event_id``, and the position replay goes up to
        (``dispatched`` says how far this node's fan-out has come)."""
        replay = await self.backend.since(last_event_id, upto, REPLAY_PAGE)
        if replay.position <= upto:
            return replay, upto
        # The subscriber had an event this node has not fanned out yet (its follower lags
        # the node the subscriber came from): what is held meanwhile repeats what it had.
        # Wait for the fan-out to pass that event, drop what was held, read up to there.
        reached: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((replay.position, reached))
        try:
            await asyncio.wait_for(reached, _CATCH_UP)
        except TimeoutError:
            raise HistoryUnavailable("this hub node is behind the shared stream; retry") from None
        sub.held.clear()
        sub.held_size = 0
        upto = dispatched()
        return await self.backend.since(last_event_id, upto, REPLAY_PAGE), upto

    async def replay(self, sub: Subscriber, view: View, first: Replay, upto: int) -> None:
        """Write ``first`` and every page after it, each drained before the next is read:
        a subscriber that does not read holds one page, never the whole history."""
        await self._write(sub, view, first)
        page = first
        while page.more and sub.phase is Phase.REPLAYING:
            page = await self._next_page(sub, view, page.events[-1], upto)
            await self._write(sub, view, page)

    async def _next_page(self, sub: Subscriber, view: View, last: StoredEvent, upto: int) -> Replay:
        try:
            page = await self.backend.since(last.position, upto, REPLAY_PAGE)
        except (ConnectionError, OSError) as exc:  # mid-stream: it resumes from what it got
            log.warning("closing a replaying subscriber: history is unavailable: %s", exc)
            sub.stream.abort()
            raise ConnectionResetError("history is unavailable") from exc
        if not page.found:  # history moved past it mid-replay: say so, never skip silently
            first = next((e.id for e in page.events if view.wants(e)), None)
            sub.write(_framed(sub, gap_notice(last.id, first)))
        return page

    async def _write(self, sub: Subscriber, view: View, replay: Replay) -> None:
        chunk: list[bytes] = []
        size = 0
        for event in replay.events:
            if not view.wants(event):
                continue
            chunk.append(event.wire)
            size += len(event.wire)
            if size >= _REPLAY_CHUNK:
                sub.write(_framed(sub, b"".join(chunk)))
                chunk, size = [], 0
                await sub.stream.drain()
                if sub.phase is Phase.CLOSED:
                    return
        if chunk:
            sub.write(_framed(sub, b"".join(chunk)))
            await sub.stream.drain()
