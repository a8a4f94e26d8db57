"""The standalone server: asyncio + uvloop + httptools."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable

from ..app import build
from ..app.demo import Clock
from ..errors import ConfigError
from ..settings import Settings
from .listen import cannot_listen
from .negotiate import protocol_factory, tls_context
from .protocol import HttpProtocol
from .registry import ConnectionRegistry

_SWITCH_INTERVAL = 0.0005  # seconds a thread holds the GIL while another waits for it
_SPARE_FILES = 64  # the store, the listening sockets, logs: files that are not connections
log = logging.getLogger("ssehub")

__all__ = ["ConnectionRegistry", "HttpProtocol", "run", "serve"]


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
    app = await build(settings)
    registry = ConnectionRegistry(settings)
    app.open_connections = registry.__len__
    try:
        server = await loop.create_server(
            protocol_factory(app, registry, tls is not None),
            settings.host,
            settings.port,
            backlog=4096,
            reuse_address=True,
            reuse_port=settings.workers > 1,
            ssl=tls,
            ssl_handshake_timeout=settings.head_timeout if tls is not None else None,
        )
    except BaseException as exc:
        await app.close()
        if isinstance(exc, OSError):
            raise cannot_listen(settings.host, settings.port, exc) from exc
        raise
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            break
    ticking = Clock(app.hub) if settings.demo and clock else None
    # What start-up made (modules, classes, the app) lives as long as the process: out of the
    # collector's sight, a full collection walks only what serving made. With 1,000 HTTP/2
    # subscribers at 1,000 events/s such a collection stalled every stream for ~40 ms; ~5 now.
    gc.collect()
    gc.freeze()
    # The SQLite store's thread waits for the GIL to hand back each commit, and a busy loop
    # lets go of it only every switch interval (5 ms by default): at 1,000 events/s to 1,000
    # subscribers over HTTP/2, p99 4.6 -> 3.2 ms with 0.5 ms. Threads that want nothing cost
    # nothing; the loop is the only other thread.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, _SWITCH_INTERVAL))
    registry.start_sweep()
    if started is not None:
        started(list(server.sockets))
    try:
        await stop.wait()
    finally:
        await registry.drain(server, app.close(), app.hub.settle)
        sys.setswitchinterval(switch)
        registry.stop_sweep()
        if ticking is not None:
            ticking.cancel()


def run(settings: Settings, started: Callable[[list[socket.socket]], None] | None = None) -> None:
    """Serve until interrupted; with ``workers > 1``, that many processes share the port."""
    open_files_for(settings.max_connections)
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


def open_files_for(connections: int) -> None:
    """Raise the soft limit on open files toward the hard one so ``--max-connections`` can be
    reached (a common soft limit, 1,024, would refuse sockets far below it), and say so when
    even the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + _SPARE_FILES
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if hard != resource.RLIM_INFINITY and hard < connections + _SPARE_FILES:
        log.warning(
            "open files are limited to %d (ulimit -Hn): fewer than --max-connections %d",
            hard,
            connections,
        )


def _run_one(
    settings: Settings, started: Callable[[list[socket.socket]], None] | None, clock: bool
) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(serve(settings, started=started, clock=clock))
    else:
        uvloop.run(serve(settings, started=started, clock=clock))
