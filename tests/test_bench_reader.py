"""The load generator's C subscriber reader (``ssehub.bench.native``, ``reader.c``) against real
hubs over real sockets: it counts exactly what was published, over HTTP/1.1 (chunked), HTTP/1.0
(close-delimited) and HTTP/2 (h2c), reports refusals in one line, and samples plausible
latencies; ``run`` drives it like the Python reader."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssehub import bench
from ssehub.bench import native
from ssehub.bench.native import NativeReader

from .support import DEADLINE, HubProcess, start_hub, until

_cc = shlex.split(os.environ.get("CC") or "cc")
pytestmark = pytest.mark.skipif(
    not _cc or shutil.which(_cc[0]) is None, reason="no C compiler to build the C reader"
)


@pytest.fixture(scope="module")
def h2_hub() -> Iterator[HubProcess]:
    h = start_hub("--anonymous", "--no-demo", "--heartbeat", "0", "--http2")
    yield h
    h.stop()


@pytest.fixture(scope="module")
def closed_hub() -> Iterator[HubProcess]:
    """A hub that refuses anonymous subscribers."""
    h = start_hub("--no-demo", "--heartbeat", "0", "--http2")
    yield h
    h.stop()


def _target(hub: HubProcess, topic: str) -> bench.Target:
    return bench.Target.mercure(hub.url, topic, hub.publisher_token)


def _options(subscribers: int, http: str = "1.1", streams: int = 100) -> bench.Options:
    return bench.Options(subscribers, http=http, streams=streams, reader="c")


async def _counted(reader: NativeReader, events: int) -> None:
    """Wait until ``reader`` has counted ``events`` (TimeoutError after DEADLINE)."""
    deadline = time.monotonic() + DEADLINE
    while (counted := await reader.count()) < events:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the reader counted {counted} of {events} events")
        await asyncio.sleep(0.005)


async def _read(
    hub: HubProcess,
    topic: str,
    subscribers: int,
    published: int,
    options: bench.Options,
    size: int = 30,
) -> tuple[int, list[float], float]:
    """Connect ``subscribers`` with the C reader, publish ``published`` timestamped events,
    wait until all arrived; the reader's (events, samples, seconds since the first publish)."""
    reader = await NativeReader.open(
        native.reader_binary(), _target(hub, topic), subscribers, options
    )
    try:
        await reader.connected()
        await reader.start()
        await reader.count()  # answered after start: counting is on
        first = time.monotonic_ns()
        for _ in range(published):
            answer = hub.publish(topic, f"{time.monotonic_ns():020d}" + "x" * size)
            assert answer.status_code == 200
        await _counted(reader, published * subscribers)
        events, samples, _ = await reader.stop()
        return events, samples, (time.monotonic_ns() - first) / 1e6
    finally:
        await reader.close()


@pytest.mark.parametrize("http", ["1.1", "1.0"])
def test_counts_exactly_what_was_published_over_http1(hub: HubProcess, http: str) -> None:
    events, samples, elapsed_ms = asyncio.run(
        _read(hub, f"urn:reader:{http}", 3, 7, _options(3, http))
    )
    assert events == 3 * 7
    # One sample per read of a subscriber: at least one, at most one per event received, each
    # between publish and now on the publisher's clock.
    assert 1 <= len(samples) <= 3 * 7
    assert all(0 <= sample <= elapsed_ms for sample in samples)


def test_counts_exactly_what_was_published_over_h2(h2_hub: HubProcess) -> None:
    # 5 subscribers, 2 streams per connection: 3 connections, the last with one stream.
    events, samples, elapsed_ms = asyncio.run(
        _read(h2_hub, "urn:reader:h2", 5, 6, _options(5, "2", streams=2))
    )
    assert events == 5 * 6
    assert 1 <= len(samples) <= 5 * 6
    assert all(0 <= sample <= elapsed_ms for sample in samples)


def test_h2_windows_are_replenished(
    h2_hub: HubProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built with windows of 20,000 bytes per stream and 65,536 per connection, the reader
    gets 200 KB on each of two streams only if its WINDOW_UPDATEs are right."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", shlex.join([*_cc, "-DSTREAM_WINDOW=20000", "-DCONN_WINDOW=1"]))
    events, _, _ = asyncio.run(
        _read(h2_hub, "urn:reader:windows", 2, 40, _options(2, "2"), size=5000)
    )
    assert events == 2 * 40


@pytest.mark.parametrize(
    ("http", "said"),
    [
        ("1.1", "the target refused a subscriber: HTTP/1.1 401 Unauthorized: "),
        ("1.0", "the target refused a subscriber: HTTP/1.1 401 Unauthorized: "),
        ("2", "the target refused a subscriber: HTTP/2 401"),
    ],
)
def test_a_refused_subscriber_is_one_line(closed_hub: HubProcess, http: str, said: str) -> None:
    async def attempt() -> str:
        target = bench.Target.mercure(closed_hub.url, "urn:reader:closed", None)
        reader = await NativeReader.open(native.reader_binary(), target, 2, _options(2, http))
        try:
            with pytest.raises(bench.BenchError) as refused:
                await reader.connected()
            return str(refused.value)
        finally:
            await reader.close()

    message = asyncio.run(attempt())
    assert message.startswith(said)
    assert "\n" not in message
    if http != "2":  # the body says why, from the hub's 401
        assert len(message) > len(said)


def test_an_event_split_between_reads_counts_once() -> None:
    """The blank line ending an event may end one read and start the next: the last byte of
    a read carries over, as the Python reader does it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()

    async def read() -> tuple[int, int]:
        target = bench.Target.raw(f"http://127.0.0.1:{port}/events", f"http://127.0.0.1:{port}/")
        reader = await NativeReader.open(native.reader_binary(), target, 1, _options(1, "1.0"))
        try:
            await until(lambda: bool(accepted), "the reader's connection")
            sock = accepted[0]
            sock.recv(65536)
            sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
            await reader.connected()
            await reader.start()
            await reader.count()  # answered after start: counting is on
            sock.sendall(b"data: one\n\ndata: two\n")
            await _counted(reader, 1)
            sock.sendall(b"\ndata: three\n\n")  # read after the first part: counted first
            await _counted(reader, 3)
            sock.sendall(b"data: four\n\n")
            await _counted(reader, 4)
            events, _, _ = await reader.stop()
            return events, len(accepted)
        finally:
            await reader.close()
            listener.close()
            for sock in accepted:
                sock.close()

    assert asyncio.run(read()) == (4, 1)


@pytest.mark.parametrize("reader", ["c", "python"])
def test_run_counts_every_delivery_with_either_reader(hub: HubProcess, reader: str) -> None:
    options = bench.Options(
        subscribers=5, client_procs=2, rate=40, duration=0.5, warmup=0, reader=reader
    )
    result = asyncio.run(bench.run(_target(hub, f"urn:reader:run:{reader}"), options))
    assert result.reader == reader
    assert result.published > 0
    assert result.delivered == result.published * 5
    assert result.latency_samples
    assert f"{'C' if reader == 'c' else 'Python'} reader" in bench.report(result)


def test_without_a_compiler_auto_falls_back_and_c_refuses(
    hub: HubProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", "no-such-cc-here")
    options = bench.Options(subscribers=1, rate=20, duration=0.2, warmup=0, reader="c")
    with pytest.raises(bench.BenchError, match="no C compiler"):
        asyncio.run(bench.run(_target(hub, "urn:reader:nocc"), options))
    options.reader = "auto"
    result = asyncio.run(bench.run(_target(hub, "urn:reader:nocc"), options))
    assert (result.reader, result.delivered) == ("python", result.published)
    assert "no C compiler" in result.reader_note
    assert "Python reader (no C compiler" in bench.report(result)


def test_the_source_builds_without_warnings(tmp_path: Path) -> None:
    source = tmp_path / "reader.c"
    source.write_bytes(native.source())
    flags = [*native.FLAGS, "-Werror", "-fsyntax-only"]
    done = subprocess.run([*_cc, *flags, str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_build_is_cached_by_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    binary = native.reader_binary()
    assert binary.parent == tmp_path / "ssehub"
    assert os.access(binary, os.X_OK)
    assert native.reader_binary() == binary
    assert [p.name for p in (tmp_path / "ssehub").iterdir()] == [binary.name]


def test_a_new_source_replaces_the_old_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache holds the current build only: a changed reader does not leave the old one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    old = native.reader_binary()
    changed = native.source() + b"\n/* a later version */\n"
    monkeypatch.setattr(native, "source", lambda: changed)
    new = native.reader_binary()
    assert new != old
    assert [p.name for p in (tmp_path / "ssehub").iterdir()] == [new.name]
