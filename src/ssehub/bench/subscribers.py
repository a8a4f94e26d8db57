"""The subscribers' side of the load: one ``Reader`` per subscriber process, driven by ``run``.

Two readers speak the same commands (connected, start, count, stop): the Python one here (a
uvloop Protocol per connection, in a multiprocessing child) and the C one (``native.py``). Both
count events as occurrences of a blank line and sample latency once per read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import multiprocessing as mp
import os
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Protocol, cast

import uvloop
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamReset
from h2.settings import SettingCodes, Settings

from .results import BenchError, Options, Target

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux 4.2


class Reader(Protocol):
    """One subscriber process: connects its share, then counts on command."""

    async def connected(self) -> None:
        """Return once every subscriber has its response head; BenchError if one cannot."""

    async def start(self) -> None:
        """Reset the counters and count from now."""

    async def count(self) -> int:
        """Events counted since ``start``."""

    async def stop(self) -> tuple[int, list[float], float]:
        """Events, latency samples (ms) and the process's CPU seconds; the process ends."""

    async def close(self) -> None:
        """End the process if it still runs (after ``stop``, or on an error)."""


def request_head(target: Target, http: str) -> bytes:
    """The subscribe request (HTTP/1.x; the C reader makes its HTTP/2 header block from it)."""
    auth = f"Authorization: Bearer {target.token}\r\n" if target.token else ""
    version = "HTTP/1.0" if http == "1.0" else "HTTP/1.1"
    return (
        f"GET {target.subscribe_path} {version}\r\nHost: {target.host}\r\n{auth}"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()


# -- the Python reader (child processes) ---------------------------------------------------------


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


async def _connect(
    factory: Callable[[], asyncio.Protocol], host: str, port: int, index: int
) -> None:
    """Connection ``index`` of this process; on IPv4 loopback, from a source address of its own
    every 8,192 connections: past about half of ip_local_port_range, each connect() from one
    address to one address:port searches longer for a free port (1.8 ms each at 16,000),
    whatever the hub. The C reader does the same (``spread_source``)."""
    loop = asyncio.get_running_loop()
    try:
        loopback = ipaddress.ip_address(host) in _LOOPBACK
    except ValueError:
        loopback = False  # a host name
    if not loopback:
        await loop.create_connection(factory, host, port)
        return
    sock = socket.socket()
    try:
        sock.setblocking(False)
        source = ipaddress.IPv4Address(0x7F000001 + ((os.getpid() & 0xFFFF) << 8) + index // 8192)
        try:
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((str(source), 0))
        except OSError:
            pass  # connect() picks the source as it would have
        await loop.sock_connect(sock, (host, port))
        await loop.create_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        raise


def _subscriber_process(
    target: Target, count: int, cpu: int | None, pipe: Connection, http: str, streams: int
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    state = _SubState()
    request = request_head(target, http)
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
                for i in range(count):
                    await _connect(lambda: _Sub(state, request), target.host, target.port, i)
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


class PythonReader:
    """A multiprocessing child running ``count`` Python subscribers, driven over a pipe."""

    def __init__(self, target: Target, count: int, options: Options) -> None:
        self.pipe, child = mp.Pipe()
        self.proc = mp.Process(
            target=_subscriber_process,
            args=(target, count, options.load_cpu, child, options.http, options.streams),
        )
        self.proc.start()
        self.stopped = False

    async def connected(self) -> None:
        while not self.pipe.poll():
            if not self.proc.is_alive() and not self.pipe.poll():
                raise BenchError(f"a subscriber process exited with code {self.proc.exitcode}")
            await asyncio.sleep(0.01)
        said = self.pipe.recv()
        if said[0] == "error":
            raise BenchError(said[1])

    async def start(self) -> None:
        self.pipe.send("start")

    async def count(self) -> int:
        self.pipe.send("count")
        return cast(int, self.pipe.recv())

    async def stop(self) -> tuple[int, list[float], float]:
        self.pipe.send("stop")
        self.stopped = True
        return cast(tuple[int, list[float], float], self.pipe.recv())

    async def close(self) -> None:
        self.proc.join(2 if self.stopped else 0)
        if self.proc.is_alive():
            self.proc.kill()  # it may wait for commands that will never come
        self.proc.join(5)
