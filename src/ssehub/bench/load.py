"""The load itself: the publisher, and one run driving it and the subscriber processes.

Subscribers speak HTTP/1.1 (chunked streams, one connection each), HTTP/1.0 (close-delimited)
or HTTP/2 without TLS (h2c prior knowledge; ``streams`` subscribers share one connection),
read by the C reader (``native.py``) or the Python one (``subscribers.py``).
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from . import native
from .results import BenchError, Options, Result, Target, percentile, proc_cpu_s, rss_kib
from .subscribers import PythonReader, Reader

__all__ = ["BenchError", "run"]

# -- publisher -----------------------------------------------------------------------------------


class _Pub(asyncio.Protocol):
    def __init__(self, owner: _Publisher) -> None:
        self.owner = owner
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answered = 0
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head = self.buffer[:head_end]
            lowered = head.lower()
            at = lowered.find(b"content-length: ")
            length = 0
            if at >= 0:
                end = lowered.find(b"\r\n", at)
                length = int(head[at + 16 : end if end >= 0 else None])
            if len(self.buffer) < head_end + 4 + length:
                break
            if not head[9:12].startswith(b"2"):
                self.owner.errors += 1
            self.buffer = self.buffer[head_end + 4 + length :]
            answered += 1
        if answered:
            self.in_flight -= answered
            self.owner.acked += answered
            if self.owner.running and self.owner.rate == 0:
                self.owner.send(self, self.owner.window - self.in_flight)


class _Publisher:
    def __init__(self, target: Target, options: Options) -> None:
        self.target = target
        self.payload, self.window = options.payload, options.window
        auth = f"Authorization: Bearer {target.token}\r\n" if target.token else ""
        self.head = (
            f"POST {target.publish_path} HTTP/1.1\r\nHost: {target.host}\r\n{auth}"
            f"Content-Type: {target.content_type}\r\n"
        ).encode()
        self.pubs: list[_Pub] = []
        self.sent = self.acked = self.errors = 0
        self.running = False
        self.rate = 0.0

    def request(self) -> bytes:
        data = b"%020d" % time.monotonic_ns() + b"x" * max(0, self.payload - 20)
        body = self.target.publish_body(data)
        return self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    async def connect(self, conns: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(conns):
            try:
                _, pub = await loop.create_connection(
                    lambda: _Pub(self), self.target.host, self.target.port
                )
            except OSError as exc:
                where = f"{self.target.host}:{self.target.port}"
                raise BenchError(f"cannot connect a publisher to {where}: {exc}") from exc
            self.pubs.append(pub)

    def send(self, pub: _Pub, n: int) -> None:
        if n <= 0 or pub.transport is None or pub.transport.is_closing():
            return  # the target closed this connection: its publishes are simply not made
        pub.transport.write(b"".join(self.request() for _ in range(n)))
        pub.in_flight += n
        self.sent += n

    async def run(self, rate: float, seconds: float) -> None:
        self.rate, self.running = rate, True
        if rate == 0:
            for pub in self.pubs:
                self.send(pub, self.window)
            await asyncio.sleep(seconds)
        else:
            start, done = time.monotonic(), 0
            while (elapsed := time.monotonic() - start) < seconds:
                due = int(elapsed * rate) - done
                if due > 0:
                    self.send(self.pubs[done % len(self.pubs)], due)
                    done += due
                await asyncio.sleep(0.001)
        self.running = False
        deadline = time.monotonic() + 10
        while any(p.in_flight for p in self.pubs) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


# -- one run -------------------------------------------------------------------------------------


def _which_reader(choice: str) -> tuple[str, str, Path | None]:
    """The reader to run for ``Options.reader``: its name, a note on why "auto" fell back to
    Python, and the C reader's binary."""
    if choice not in ("auto", "c", "python"):
        raise BenchError(f"unknown reader {choice!r} (auto, c or python)")
    if choice == "python":
        return "python", "", None
    try:
        return "c", "", native.reader_binary()
    except native.NativeUnavailable as exc:
        if choice == "c":
            raise BenchError(str(exc)) from None
        return "python", str(exc), None


async def run(
    target: Target, options: Options, tick: Callable[[str, float], None] | None = None
) -> Result:
    """One measured run; ``tick(phase, fraction)`` reports progress."""
    say = tick or (lambda phase, fraction: None)
    result = Result(options.subscribers, options.payload, options.rate, options.http)
    result.reader, result.reader_note, binary = _which_reader(options.reader)
    readers: list[Reader] = []
    share = [options.subscribers // options.client_procs] * options.client_procs
    share[0] += options.subscribers - sum(share)
    started = time.monotonic()
    # This process may have run other loads before (benchmarks/peers.py runs many): only
    # what it spends from here counts.
    before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        for count in share:
            if binary is None:
                readers.append(PythonReader(target, count, options))
            else:
                readers.append(await native.NativeReader.open(binary, target, count, options))
        say("connecting", 0.0)
        for reader in readers:
            await reader.connected()
        result.connect_per_s = options.subscribers / (time.monotonic() - started)
        pids = target.hub_pids
        result.hub_rss_kib = rss_kib(pids)
        publisher = _Publisher(target, options)
        await publisher.connect(options.conns)
        if options.warmup:
            say("warming up", 0.0)
            await publisher.run(options.rate, options.warmup)
            await asyncio.sleep(0.5)
        for reader in readers:
            await reader.start()
        await asyncio.sleep(0.05)
        acked_before, errors_before = publisher.acked, publisher.errors
        cpu_before, t0 = proc_cpu_s(pids), time.monotonic()
        window = asyncio.ensure_future(publisher.run(options.rate, options.duration))
        while not window.done():
            say("measuring", min(1.0, (time.monotonic() - t0) / options.duration))
            await asyncio.sleep(0.1)
        await window
        t1 = time.monotonic()
        cpu_hub = proc_cpu_s(pids) - cpu_before
        result.window_s = t1 - t0
        result.published = publisher.acked - acked_before
        result.publish_errors = publisher.errors - errors_before
        expected = result.published * options.subscribers
        say("draining", 1.0)
        last, still = -1, time.monotonic()
        while time.monotonic() - still < 2.0 and time.monotonic() - t1 < 30:
            now = sum(await asyncio.gather(*(reader.count() for reader in readers)))
            if now >= expected:
                break
            if now != last:
                last, still = now, time.monotonic()
            await asyncio.sleep(0.05)
        load_cpu = 0.0
        for reader in readers:
            events, samples, cpu = await reader.stop()
            result.delivered += events
            result.latency_samples += samples
            load_cpu += cpu
        lat = result.latency_samples
        result.publishes_per_s = result.published / result.window_s
        result.deliveries_per_s = result.delivered / result.window_s
        result.delivery_ratio = result.delivered / expected if expected else 0.0
        result.latency_ms = {
            "p50": percentile(lat, 0.5),
            "p90": percentile(lat, 0.9),
            "p99": percentile(lat, 0.99),
            "max": max(lat, default=float("nan")),
        }
        if pids:
            result.hub_cpu_pct = 100 * cpu_hub / result.window_s
            result.hub_rss_per_sub_bytes = result.hub_rss_kib * 1024 / options.subscribers
        usage = resource.getrusage(resource.RUSAGE_SELF)
        own_s = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
        elapsed = time.monotonic() - started
        result.load_cpu_pct = 100 * (load_cpu + own_s) / elapsed
        cores = 1 if options.load_cpu is not None else os.cpu_count() or 1
        result.saturated_load = (
            max(100 * load_cpu / max(elapsed, 1e-9) / len(readers), result.load_cpu_pct / cores)
            > 90
        )
        return result
    finally:
        for reader in readers:
            await reader.close()
