"""The standalone server: asyncio + uvloop + httptools."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable

from ..backends import open_backend
from ..errors import ConfigError
from ..hub import Hub
from ..settings import Settings
from .app import App
from .listen import cannot_listen
from .negotiate import protocol_factory, tls_context
from .protocol import HttpProtocol

log = logging.getLogger("ssehub")

__all__ = ["App", "HttpProtocol", "run", "serve"]


async def serve(
    settings: Settings,
    *,
    started: Callable[[list[socket.socket]], None] | None = None,
    stop: asyncio.Event | None = None,
    clock: bool = True,
) -> None:
    """Run a hub until ``stop`` is set (or SIGINT/SIGTERM), then close every connection."""
    loop = asyncio.get_running_loop()
    tls = tls_context(settings)  # a certificate that will not load stops us before anything
    backend = open_backend(
        settings.store, settings.history_size, settings.history_max_age, settings.history_max_bytes
    )
    hub = Hub(backend, heartbeat=settings.heartbeat, max_buffer=settings.max_write_buffer)
    await hub.start()
    app = App(settings, hub)
    await app.auth.start()
    try:
        server = await loop.create_server(
            protocol_factory(app, tls is not None),
            settings.host,
            settings.port,
            backlog=4096,
            reuse_address=True,
            reuse_port=settings.workers > 1,
            ssl=tls,
            ssl_handshake_timeout=settings.head_timeout if tls is not None else None,
        )
    except OSError as exc:
        await hub.close()
        raise cannot_listen(settings.host, settings.port, exc) from exc
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            break
    ticking = _Clock(app) if settings.demo and clock else None
    sweeping = _Sweep(app)
    if started is not None:
        started(list(server.sockets))
    try:
        await stop.wait()
    finally:
        await _drain(settings, server, app, hub)
        sweeping.cancel()
        if ticking is not None:
            ticking.cancel()


async def _drain(settings: Settings, server: asyncio.Server, app: App, hub: Hub) -> None:
    """Stop accepting, let publishes in flight finish and be answered, end every stream
    cleanly; whatever is still open at the deadline is cut."""
    log.info(
        "draining: %d connections, %gs at most", len(app.connections), settings.shutdown_timeout
    )
    server.close()
    for conn in list(app.connections):
        conn.drain_close()
    deadline = asyncio.get_running_loop().time() + settings.shutdown_timeout
    app.all_closed = asyncio.Event()
    if not app.connections:
        app.all_closed.set()
    await hub.close()
    left = deadline - asyncio.get_running_loop().time()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app.all_closed.wait(), max(left, 0.0))
    for conn in list(app.connections):
        conn.abort()
    await server.wait_closed()
    log.info("drained")


class _Sweep:
    """Once a second, every connection checks its own deadlines (see HttpProtocol.check)."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(1.0, self._run)

    def _run(self) -> None:
        now = self._loop.time()
        for conn in list(self._app.connections):
            conn.check(now)
        self._handle = self._loop.call_later(1.0, self._run)

    def cancel(self) -> None:
        self._handle.cancel()


class _Clock:
    """The demo's clock: a publish on each wall-clock second, through the normal path.

    Each tick is for a given second, so a timer that fires a little early cannot publish the
    same second twice."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._loop = asyncio.get_running_loop()
        self._second = math.floor(time.time()) + 1
        self._handle = self._loop.call_later(self._second - time.time(), self._tick)

    def _tick(self) -> None:
        # A tick is news for a second only: it goes live, never into history.
        self._app.hub.announce(self._app.clock_event(self._second))
        self._second = max(self._second + 1, math.floor(time.time()) + 1)
        self._handle = self._loop.call_later(max(0.0, self._second - time.time()), self._tick)

    def cancel(self) -> None:
        self._handle.cancel()


def run(settings: Settings, started: Callable[[list[socket.socket]], None] | None = None) -> None:
    """Serve until interrupted; with ``workers > 1``, that many processes share the port."""
    if settings.workers == 1:
        _run_one(settings, started, clock=True)
        return
    children = []
    faults, fault = os.pipe()  # a worker that cannot start tells the parent why, in one line
    for number in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # a worker: serve, then leave without running the parent's cleanup
            code = 0
            try:
                _run_one(settings, started if number == 0 else None, clock=number == 0)
            except ConfigError as exc:
                os.write(fault, f"{exc}\n".encode())
                code = 1
            except BaseException:
                log.exception("worker %d failed", number)
                code = 1
            os._exit(code)
        children.append(pid)
    os.close(fault)

    def forward(sig: int, _: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        worst = max(worst, os.waitstatus_to_exitcode(status))
    with os.fdopen(faults, encoding="utf-8", errors="replace") as told:
        first = told.readline().strip()
    if first:
        raise ConfigError(first)
    if worst:
        raise SystemExit(worst)


def _run_one(
    settings: Settings, started: Callable[[list[socket.socket]], None] | None, clock: bool
) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(serve(settings, started=started, clock=clock))
    else:
        uvloop.run(serve(settings, started=started, clock=clock))
