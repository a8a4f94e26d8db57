"""Every connection of one server (uvicorn's ``ServerState``): admission limits, the tasks
connections start, the once-a-second deadline sweep, and the drain at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..errors import HubError
from ..settings import Settings
from .connection import Registered

log = logging.getLogger("ssehub")

_SWEEP_SLICE = 0.0005  # seconds of deadline checks before the loop may run again


class ConnectionRegistry:
    """Owns the connections and their tasks; a connection registers in ``connection_made``
    and leaves in ``connection_lost``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections: set[Registered] = set()
        self.per_address: dict[str, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        # Refused at admission, answered, held open until their client closes (a second at
        # most) so no reset overtakes the answer; bounded apart, as they are not counted above.
        self.lingering: set[Registered] = set()
        self._all_closed: asyncio.Event | None = None  # set by drain() to hear the last close
        self._sweep: asyncio.Handle | None = None

    def __len__(self) -> int:
        return len(self.connections)

    # -- admission -----------------------------------------------------------------------------

    def admit(self, conn: Registered) -> HubError | None:
        """Register ``conn``, or say why it is refused (503: the hub is full; 429: its address
        has too many)."""
        settings = self.settings
        if len(self.connections) >= settings.max_connections:
            return HubError(
                503, "too many connections to this hub; try again soon", (("Retry-After", "1"),)
            )
        peer = conn.transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            address = str(peer[0])
            count = self.per_address.get(address, 0) + 1
            limit = settings.max_connections_per_ip
            if limit and count > limit:
                return HubError(
                    429,
                    f"too many connections from {address} (at most {limit})",
                    (("Retry-After", "1"),),
                )
            self.per_address[address] = count
            conn.address = address
        self.connections.add(conn)
        return None

    def may_linger(self, conn: Registered) -> bool:
        """Whether a refused ``conn`` may linger: while fewer refusals linger than a tenth of
        --max-connections. Past that, in a flood, it is closed at once (its answer may then
        be lost to a reset) rather than hold one more socket."""
        if len(self.lingering) >= max(1, self.settings.max_connections // 10):
            return False
        self.lingering.add(conn)
        return True

    def release(self, conn: Registered) -> None:
        self.lingering.discard(conn)
        self.connections.discard(conn)
        if self._all_closed is not None and not self.connections:
            self._all_closed.set()
        if conn.address is not None:
            left = self.per_address.pop(conn.address, 1) - 1
            if left > 0:
                self.per_address[conn.address] = left
            conn.address = None

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as a task this registry keeps until it ends (cancelled at drain)."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- deadlines -----------------------------------------------------------------------------

    def start_sweep(self, every: float = 1.0) -> None:
        """Every ``every`` seconds, every connection checks its own deadlines: one float each,
        no timer object per connection. A check may cost system calls (``tcpinfo``), so the
        round goes in slices, letting the loop (and the hub's passes) run between them: ten
        thousand checks at once would stall every stream for tens of milliseconds."""
        loop = asyncio.get_running_loop()
        due: list[Registered] = []

        def sweep() -> None:
            if not due:
                due.extend(self.connections)
            now, connections = loop.time(), self.connections
            deadline = time.perf_counter() + _SWEEP_SLICE
            checked = 0
            while due:
                conn = due.pop()
                if conn in connections:  # not gone since the round began
                    conn.check(now)
                checked += 1
                if not checked & 63 and time.perf_counter() >= deadline:
                    break
            self._sweep = loop.call_soon(sweep) if due else loop.call_later(every, sweep)

        self._sweep = loop.call_later(every, sweep)

    def stop_sweep(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()

    # -- shutdown ------------------------------------------------------------------------------

    async def drain(
        self,
        server: asyncio.Server,
        until_idle: Coroutine[Any, Any, None],
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Stop accepting, let publishes in flight finish and be answered (``until_idle``),
        end every stream cleanly; whatever is still open at the deadline is cut.

        Request connections stop reading first; then ``settle`` writes every accepted event
        to the streams, which end only after that: a subscriber connected at shutdown gets
        every event a publisher heard was accepted."""
        loop = asyncio.get_running_loop()
        timeout = self.settings.shutdown_timeout
        log.info("draining: %d connections, %gs at most", len(self.connections), timeout)
        deadline = loop.time() + timeout
        server.close()
        later = []
        for conn in list(self.connections):
            if conn.streaming:
                later.append(conn)
            else:
                conn.drain_close()
        if settle is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settle(), max(deadline - loop.time(), 0.0))
        for conn in later:
            conn.drain_close()
        self._all_closed = asyncio.Event()
        if not self.connections:
            self._all_closed.set()
        await until_idle
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_closed.wait(), max(deadline - loop.time(), 0.0))
        for conn in list(self.connections):
            conn.abort()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks))
        await server.wait_closed()
        log.info("drained")
