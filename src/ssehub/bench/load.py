"""The load itself: subscriber processes counting events and the publisher.

Subscribers speak HTTP/1.1 (chunked streams, one connection each), HTTP/1.0 (close-delimited)
or HTTP/2 without TLS (h2c prior knowledge; ``streams`` subscribers share one connection).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import cast

import uvloop
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamReset
from h2.settings import SettingCodes, Settings

from .results import Options, Result, Target, percentile, proc_cpu_s, rss_kib

# -- subscribers (child processes) ---------------------------------------------------------------


class BenchError(Exception):
    """The load cannot run: the target refused or did not answer (one line, for the CLI)."""


@dataclass
class _SubState:
    connected: int = 0
    refusal: str | None = None
    counting: bool = False
    events: int = 0
    chunks: int = 0
    latencies: list[float] = field(default_factory=list)


class _Sub(asyncio.Protocol):
    __slots__ = ("head_done", "request", "state", "tail")

    def __init__(self, state: _SubState, request: bytes) -> None:
        self.state = state
        self.request = request
        self.tail = b""
        self.head_done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if not self.head_done:
            head_end = data.find(b"\r\n\r\n")
            if head_end < 0:
                return
            self.head_done = True
            state.connected += 1
            if not data[9:12].startswith(b"2") and state.refusal is None:
                status = data[: data.find(b"\r\n")].decode("latin-1")
                body = data[head_end + 4 :][:200].decode("utf-8", "replace")
                state.refusal = f"{status}: {' '.join(body.split())}"
            data = data[head_end + 4 :]
        if state.counting:
            _count(state, data, self.tail)
        self.tail = data[-1:]


def _count(state: _SubState, data: bytes, tail: bytes) -> None:
    """Count the events (and sample the latency) of one piece of a counted stream."""
    state.events += (tail + data).count(b"\n\n")
    state.chunks += 1
    at = data.find(b"data: ")
    if at >= 0 and len(data) >= at + 26 and len(state.latencies) < 200_000:
        digits = data[at + 6 : at + 26]
        if digits.isdigit():
            state.latencies.append((time.monotonic_ns() - int(digits)) / 1e6)


class _H2Sub(asyncio.Protocol):
    """``streams`` subscribers on one HTTP/2 connection (h2c prior knowledge)."""

    def __init__(self, state: _SubState, head: list[tuple[bytes, bytes]], streams: int) -> None:
        self.state = state
        self.head = head
        self.streams = streams
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        # Windows wide open: the load measures the hub's fan-out, not our reading.
        self.h2.local_settings = Settings(
            client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: 1 << 24}
        )
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        h2 = self.h2
        h2.initiate_connection()
        h2.increment_flow_control_window(1 << 30)
        for _ in range(self.streams):
            h2.send_headers(h2.get_next_available_stream_id(), self.head, end_stream=True)
        self.transport.write(h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        state, h2 = self.state, self.h2
        for event in h2.receive_data(data):
            if isinstance(event, DataReceived):
                h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if state.counting and event.data:
                    _count(state, bytes(event.data), b"")
            elif isinstance(event, ResponseReceived):
                state.connected += 1
                status = dict(event.headers or ()).get(b":status", b"")
                if not status.startswith(b"2") and state.refusal is None:
                    state.refusal = f"HTTP/2 {status.decode('latin-1')}"
            elif isinstance(event, StreamReset) and state.refusal is None:
                state.refusal = f"the hub reset an HTTP/2 stream ({event.error_code!r})"
        out = h2.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)


def _subscriber_process(
    target: Target, count: int, cpu: int | None, pipe: Connection, http: str, streams: int
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    state = _SubState()
    auth = f"Authorization: Bearer {target.token}\r\n" if target.token else ""
    version = "HTTP/1.0" if http == "1.0" else "HTTP/1.1"
    request = (
        f"GET {target.subscribe_path} {version}\r\nHost: {target.host}\r\n{auth}"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    head = [
        (b":method", b"GET"),
        (b":path", target.subscribe_path.encode()),
        (b":scheme", b"http"),
        (b":authority", target.host.encode()),
        (b"accept", b"text/event-stream"),
    ]
    if target.token:
        head.append((b"authorization", f"Bearer {target.token}".encode()))

    def h2_sub(n: int) -> Callable[[], asyncio.Protocol]:
        return lambda: _H2Sub(state, head, n)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            if http == "2":
                for first in range(0, count, streams):
                    factory = h2_sub(min(streams, count - first))
                    await loop.create_connection(factory, target.host, target.port)
            else:
                for _ in range(count):
                    await loop.create_connection(
                        lambda: _Sub(state, request), target.host, target.port
                    )
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror
            pipe.send(("error", f"cannot connect to {target.host}:{target.port}: {reason}"))
            return
        while state.connected < count:
            await asyncio.sleep(0.01)
        if state.refusal is not None:
            pipe.send(("error", f"the target refused a subscriber: {state.refusal}"))
            return
        pipe.send(("connected", time.monotonic() - started))
        while True:
            while not pipe.poll():
                await asyncio.sleep(0.005)
            command = pipe.recv()
            if command == "start":
                state.counting, state.events, state.chunks = True, 0, 0
                state.latencies.clear()
            elif command == "count":
                pipe.send(state.events)
            elif command == "stop":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                pipe.send((state.events, state.latencies, usage.ru_utime + usage.ru_stime))
                return

    uvloop.run(main())


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
        if n <= 0 or pub.transport is None:
            return
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


async def run(
    target: Target, options: Options, tick: Callable[[str, float], None] | None = None
) -> Result:
    """One measured run; ``tick(phase, fraction)`` reports progress."""
    say = tick or (lambda phase, fraction: None)
    result = Result(options.subscribers, options.payload, options.rate, options.http)
    procs: list[mp.Process] = []
    pipes: list[Connection] = []
    share = [options.subscribers // options.client_procs] * options.client_procs
    share[0] += options.subscribers - sum(share)
    started = time.monotonic()
    for count in share:
        parent, child = mp.Pipe()
        proc = mp.Process(
            target=_subscriber_process,
            args=(target, count, options.load_cpu, child, options.http, options.streams),
        )
        proc.start()
        procs.append(proc)
        pipes.append(parent)
    try:
        say("connecting", 0.0)
        for pipe, proc in zip(pipes, procs, strict=True):
            while not pipe.poll():
                if not proc.is_alive() and not pipe.poll():
                    raise BenchError(f"a subscriber process exited with code {proc.exitcode}")
                await asyncio.sleep(0.01)
            said = pipe.recv()
            if said[0] == "error":
                raise BenchError(said[1])
        result.connect_per_s = options.subscribers / (time.monotonic() - started)
        pids = target.hub_pids
        result.hub_rss_kib = rss_kib(pids)
        publisher = _Publisher(target, options)
        await publisher.connect(options.conns)
        if options.warmup:
            say("warming up", 0.0)
            await publisher.run(options.rate, options.warmup)
            await asyncio.sleep(0.5)
        for pipe in pipes:
            pipe.send("start")
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
            for pipe in pipes:
                pipe.send("count")
            now = sum(pipe.recv() for pipe in pipes)
            if now >= expected:
                break
            if now != last:
                last, still = now, time.monotonic()
            await asyncio.sleep(0.05)
        load_cpu = 0.0
        for pipe in pipes:
            pipe.send("stop")
            events, samples, cpu = pipe.recv()
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
        own = resource.getrusage(resource.RUSAGE_SELF)
        elapsed = time.monotonic() - started
        result.load_cpu_pct = 100 * (load_cpu + own.ru_utime + own.ru_stime) / elapsed
        cores = 1 if options.load_cpu is not None else os.cpu_count() or 1
        result.saturated_load = (
            max(100 * load_cpu / max(elapsed, 1e-9) / len(procs), result.load_cpu_pct / cores) > 90
        )
        return result
    except BaseException:
        for proc in procs:
            proc.kill()  # they may wait for commands that will never come
        raise
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
