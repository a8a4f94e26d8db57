"""The standalone server: asyncio + uvloop + httptools."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable

from ..backends.memory import MemoryBackend
from ..hub import Hub
from ..settings import Settings
from .app import App
from .protocol import HttpProtocol

log = logging.getLogger("ssehub")

__all__ = ["App", "HttpProtocol", "run", "serve"]


async def serve(
    settings: Settings,
    *,
    started: Callable[[list[socket.socket]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a hub until ``stop`` is set (or SIGINT/SIGTERM), then close every connection."""
    loop = asyncio.get_running_loop()
    backend = MemoryBackend(settings.history_size, settings.history_max_age)
    hub = Hub(backend, heartbeat=settings.heartbeat, max_buffer=settings.max_write_buffer)
    await hub.start()
    app = App(settings, hub)
    server = await loop.create_server(
        lambda: HttpProtocol(app),
        settings.host,
        settings.port,
        backlog=4096,
        reuse_address=True,
    )
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            break
    clock = _Clock(app) if settings.demo else None
    sockets = list(server.sockets)
    if started is not None:
        started(sockets)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: closing %d connections", len(app.connections))
        if clock is not None:
            clock.cancel()
        server.close()
        for conn in list(app.connections):
            if conn.transport is not None:
                conn.transport.close()
        await hub.close()
        await server.wait_closed()


class _Clock:
    """The demo's clock: a publish on each wall-clock second, through the normal path."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(1.0 - time.time() % 1.0, self._tick)

    def _tick(self) -> None:
        self._app.hub.publish(self._app.clock_event())
        self._handle = self._loop.call_later(1.0 - time.time() % 1.0, self._tick)

    def cancel(self) -> None:
        self._handle.cancel()


def run(settings: Settings, started: Callable[[list[socket.socket]], None] | None = None) -> None:
    """Serve with uvloop until interrupted."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(serve(settings, started=started))
    else:
        uvloop.run(serve(settings, started=started))
