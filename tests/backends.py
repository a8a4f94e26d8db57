"""Backends under test: memory, SQLite in a temporary file, Redis on a server that answers."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest

from ssehub.backends import REPLAY_PAGE, Backend, Replay, open_backend

from .support import free_port


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


_spawned: list[tuple[subprocess.Popen[bytes], int]] = []


@atexit.register
def _stop_spawned() -> None:
    for proc, _ in _spawned:
        proc.terminate()


def redis_server() -> str:
    """A Redis URL: the machine's on 6379, or one started here. CI insists (no skip)."""
    if answers(6379):
        return "redis://127.0.0.1:6379/0"
    if _spawned and _spawned[0][0].poll() is None:
        return f"redis://127.0.0.1:{_spawned[0][1]}/0"
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("SSEHUB_REQUIRE_REDIS"):
            raise RuntimeError("SSEHUB_REQUIRE_REDIS is set but no Redis answers or installs")
        pytest.skip("no Redis on 127.0.0.1:6379 and no redis-server to start")
    port = free_port()
    _spawned.append((start_redis(binary, port, "--save", "", "--appendonly", "no"), port))
    return f"redis://127.0.0.1:{port}/0"


def start_redis(binary: str, port: int, *flags: str) -> subprocess.Popen[bytes]:
    """redis-server on a loopback port with these flags, once it answers (10 s at most)."""
    proc = subprocess.Popen([binary, "--port", str(port), *flags], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc


def redis_store() -> str:
    """A store URL with keys of its own, so tests never see each other's events."""
    return f"{redis_server()}?prefix=ssehub-test-{uuid.uuid4().hex[:12]}"


@contextmanager
def store_url(kind: str) -> Iterator[str]:
    if kind == "memory":
        yield "memory"
    elif kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:{tmp}/events.db"
    else:
        yield redis_store()


def make_backend(url: str, history_size: int = 100, history_max_age: float = 0.0) -> Backend:
    return open_backend(url, history_size, history_max_age)


def intercept_since(backend: Backend, before: Callable[[int], Awaitable[None]]) -> None:
    """Make each ``backend.since`` await ``before(n)`` first (n: the read's number, from 1):
    a slow or failing history, in process."""
    since = backend.since
    reads = 0

    async def intercepted(after: str | int, upto: int, limit: int = REPLAY_PAGE) -> Replay:
        nonlocal reads
        reads += 1
        await before(reads)
        return await since(after, upto, limit)

    backend.since = intercepted  # type: ignore[method-assign]


def failing(read: int) -> Callable[[int], Awaitable[None]]:
    """For ``intercept_since``: read number ``read`` fails with a fault of the hub's own."""

    async def fail(n: int) -> None:
        if n == read:
            raise RuntimeError("boom")

    return fail


@contextmanager
def own_redis(*extra: str) -> Iterator[int]:
    """A Redis of this test's own on a free port, for what must not touch the shared one."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is needed for a Redis of the test's own")
    port = free_port()
    proc = start_redis(binary, port, "--save", "", "--appendonly", "no", *extra)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait()
