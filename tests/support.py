"""Test support: a real `ssehub serve` process and small socket-level clients."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import jwt
from prometheus_client.parser import text_string_to_metric_families

from ssehub.sse import Decoder, ServerEvent

KEY = "test-key-0123456789-0123456789-abcdef"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HUB = "/.well-known/mercure"


# -- waiting on conditions ---------------------------------------------------------------------
# Tests never sleep for a fixed time: they wait for the thing they need (a subscriber
# registered, a counter moved, bytes arrived) with a generous deadline, so a loaded machine
# makes them slower, never wrong.

DEADLINE = 15.0


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = DEADLINE, every: float = 0.02
) -> None:
    """Poll ``condition`` until it holds; raise TimeoutError naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g}s for {what}")
        time.sleep(every)


async def until(condition: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
    """``wait_until`` inside an event loop: yields to the loop between looks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError(f"waited {within:g}s for {what}")
        await asyncio.sleep(0.001)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str) -> Samples:
    """Every sample of a hub's /metrics, keyed by name and sorted labels."""
    answer = httpx.get(base + "/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def metric(base: str, name: str) -> float:
    return scrape(base).get((name, ()), 0.0)


def wait_metric(base: str, name: str, at_least: float, timeout: float = DEADLINE) -> None:
    """Wait until the hub's ``name`` sample reaches ``at_least`` (e.g. subscribers registered)."""
    wait_until(lambda: metric(base, name) >= at_least, f"{name} >= {at_least:g}", timeout)


@contextlib.contextmanager
def http_server(
    body: bytes, status: int = 200, content_type: str = "application/json"
) -> Iterator[str]:
    """A plain HTTP server on a free port that answers every GET and POST with ``status`` and
    ``body`` (a JWKS URL, a failing hub); yields its base URL."""

    class Answer(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_token(
    key: str = KEY,
    publish: Sequence[str] | None = None,
    subscribe: Sequence[str] | None = None,
    exp: float | None = None,
    algorithm: str = "HS256",
) -> str:
    mercure: dict[str, list[str]] = {}
    if publish is not None:
        mercure["publish"] = list(publish)
    if subscribe is not None:
        mercure["subscribe"] = list(subscribe)
    claims: dict[str, object] = {"mercure": mercure}
    if exp is not None:
        claims["exp"] = int(exp)
    return jwt.encode(claims, key, algorithm=algorithm)


@dataclass
class HubProcess:
    """`ssehub serve` started as a user would, on a free port."""

    port: int
    proc: subprocess.Popen[bytes]
    key: str = KEY
    publisher_token: str = field(default="")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + HUB

    def publish(
        self,
        topics: str | Sequence[str],
        data: str = "",
        token: str | None = None,
        **fields: str,
    ) -> httpx.Response:
        form: list[tuple[str, str]] = [
            ("topic", t) for t in ([topics] if isinstance(topics, str) else topics)
        ]
        form.append(("data", data))
        form.extend(fields.items())
        return httpx.post(
            self.url,
            content=urlencode(form),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": f"Bearer {token or self.publisher_token}",
            },
            timeout=10,
        )

    def subscribe(
        self,
        topics: str | Sequence[str],
        *,
        token: str | None = None,
        last_event_id: str | None = None,
        query: Sequence[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        version: str = "HTTP/1.1",
    ) -> SSEClient:
        params: list[tuple[str, str]] = [
            ("topic", t) for t in ([topics] if isinstance(topics, str) else topics)
        ]
        params.extend(query)
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if last_event_id is not None:
            all_headers["Last-Event-ID"] = last_event_id
        return SSEClient(self.port, HUB + "?" + urlencode(params), all_headers, rcvbuf, version)

    def metric(self, name: str) -> float:
        return metric(self.base, name)

    def wait_metric(self, name: str, at_least: float, timeout: float = DEADLINE) -> None:
        wait_metric(self.base, name, at_least, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve_process(cmd: list[str], port: int, env: dict[str, str] | None = None) -> HubProcess:
    """Start a server process (uvicorn, the examples) and wait until it listens on ``port``."""
    proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parent.parent)
    if not await_listening(proc, port, within=20):
        proc.kill()
        raise RuntimeError(f"{cmd} did not start")
    hub = HubProcess(port, proc)
    hub.publisher_token = make_token(publish=["*"])
    return hub


def listening(port: int) -> int:
    """How many sockets listen on ``port`` (one per worker with ``--workers``): the kernel's
    word, so nothing is asked of the hub."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += fields[1].endswith(f":{port:04X}") and fields[3] == "0A"  # TCP_LISTEN
    return count


def await_listening(
    proc: subprocess.Popen[bytes], port: int, count: int = 1, within: float = 15.0
) -> bool:
    """Wait until ``count`` sockets listen on ``port``; False if ``proc`` exits first or the
    time runs out."""
    deadline = time.monotonic() + within
    while listening(port) < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def start_hub(
    *args: str, key: str | None = KEY, port: int | None = None, module: str = "ssehub.cli"
) -> HubProcess:
    """Start ``ssehub serve`` and return once it listens: every worker, with ``--workers``
    (a worker listens once its hub is built). Its output goes to a file, never a pipe nobody
    reads (a hub that logs much would block on it). A free port picked here may be taken
    before the hub binds it (other processes open connections too): then a new one is tried."""
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSEHUB_")}
    for _ in range(5):
        chosen = port or free_port()
        cmd = [sys.executable, "-m", module, "serve", "--port", str(chosen), *args]
        if key is not None:
            cmd += ["--jwt-key", key]
        with tempfile.TemporaryFile() as output:  # the hub keeps writing to its own copy
            proc = subprocess.Popen(
                cmd, env=env, stdout=output, stderr=output, cwd=Path(__file__).parent.parent
            )
            if await_listening(proc, chosen, workers):
                hub = HubProcess(chosen, proc, key or "")
                if key is not None:
                    hub.publisher_token = make_token(key, publish=["*"])
                return hub
            if proc.poll() is None:
                proc.kill()
                raise RuntimeError(f"ssehub serve did not listen with {workers} worker(s)")
            output.seek(0)
            said = output.read().decode(errors="replace")
        if port is not None or "already in use" not in said:
            raise RuntimeError(f"ssehub serve exited: {said}")
    raise RuntimeError("ssehub serve found no free port in 5 tries")


class Dechunker:
    """Incremental HTTP/1.1 chunked-body decoder that checks the framing as it goes.

    ``feed`` returns the body bytes completed so far; ``ended`` turns true at the terminating
    ``0`` chunk. Bad framing raises ValueError, so a test reading through this proves the
    stream was validly chunked."""

    def __init__(self) -> None:
        self.buffer = b""
        self.left = -1  # bytes of the current chunk still to come; -1: a size line is next
        self.ended = False
        self.chunks = 0

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out: list[bytes] = []
        while not self.ended:
            if self.left < 0:
                line, sep, rest = self.buffer.partition(b"\r\n")
                if not sep:
                    if len(self.buffer) > 32:
                        raise ValueError(f"no chunk size line: {self.buffer[:40]!r}")
                    break
                if not line or any(c not in b"0123456789abcdefABCDEF" for c in line):
                    raise ValueError(f"bad chunk size line {line!r}")
                self.buffer, self.left = rest, int(line, 16)
                if self.left == 0:
                    if not self.buffer.startswith(b"\r\n") and len(self.buffer) >= 2:
                        raise ValueError(f"bad last chunk: {self.buffer[:10]!r}")
                    self.ended = True
                    break
                self.chunks += 1
            if len(self.buffer) < self.left + 2:
                break
            if self.buffer[self.left : self.left + 2] != b"\r\n":
                raise ValueError(f"chunk not ended by CRLF: {self.buffer[: self.left + 2]!r}")
            out.append(self.buffer[: self.left])
            self.buffer, self.left = self.buffer[self.left + 2 :], -1
        return b"".join(out)


def next_chunk(sock: socket.socket, deadline: float) -> bytes | None:
    """The next bytes ``sock`` receives before ``deadline`` (``time.monotonic``): ``b""`` once
    the peer closed, None if the deadline came first (a reset raises)."""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(max(0.01, left))
        try:
            return sock.recv(65536)
        except TimeoutError:
            continue
    return None


def check_stream_ends_and_resumes(hub: HubProcess) -> None:
    """A stream the hub ends (a --write-timeout set short) closes after what it sent, and a
    resume with Last-Event-ID gets what was published after."""
    with hub.subscribe("t") as sub:
        first = hub.publish("t", "one").text
        assert [e.id for e in sub.events(1)] == [first]
        assert sub.wait_closed(5)
    second = hub.publish("t", "two").text
    with hub.subscribe("t", last_event_id=first) as again:
        assert [e.id for e in again.events(1)] == [second]


class SSEClient:
    """A subscriber on a raw socket: sends the GET, parses the head, decodes events (through
    a ``Dechunker`` when the stream is chunked, which checks its framing)."""

    def __init__(
        self,
        port: int,
        target: str,
        headers: dict[str, str],
        rcvbuf: int | None = None,
        version: str = "HTTP/1.1",
    ) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        lines = [f"GET {target} {version}", f"Host: 127.0.0.1:{port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())  # UTF-8, as browsers
        self.decoder = Decoder()
        self.pending: list[ServerEvent] = []
        self.closed = False
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before the response head: {buf!r}")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.body = b""
        self.dechunker: Dechunker | None = None
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            self.dechunker = Dechunker()
        if self.status != 200:
            length = int(self.headers.get("content-length", "0"))
            while len(rest) < length:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            self.body = rest
        else:
            self._feed(rest)

    def _feed(self, data: bytes) -> None:
        if self.dechunker is not None:
            data = self.dechunker.feed(data)
        self.pending.extend(self.decoder.feed(data))

    def events(self, count: int, timeout: float = 10.0) -> list[ServerEvent]:
        """The next ``count`` events; raises TimeoutError if they do not come in time."""
        self.read_until(lambda: len(self.pending) >= count, f"{count} events", timeout)
        out, self.pending = self.pending[:count], self.pending[count:]
        return out

    def read_until(
        self, condition: Callable[[], bool], what: str, timeout: float = DEADLINE
    ) -> None:
        """Read (keeping events in ``pending``) until ``condition`` holds, e.g. on comments."""
        deadline = time.monotonic() + timeout
        while not condition():
            chunk = next_chunk(self.sock, deadline)
            if chunk is None:
                raise TimeoutError(f"waited {timeout:g}s for {what}; got {self.pending}")
            if not chunk:
                self.closed = True
                raise ConnectionError(f"stream closed while waiting for {what}: {self.pending}")
            self._feed(chunk)

    def next_is(self, event_id: str) -> None:
        """The next event is ``event_id``: nothing (a duplicate, a leak) came before it.

        Publish a marker after the thing that must not be delivered, then call this: the hub
        keeps publish order, so anything wrongly sent would arrive first. No waiting on silence.
        """
        [event] = self.events(1)
        assert event.id == event_id, f"expected {event_id!r} next, got {event}"

    def wait_closed(self, timeout: float = DEADLINE) -> bool:
        """True once the hub closes the stream (events meanwhile are kept)."""
        deadline = time.monotonic() + timeout
        try:
            while chunk := next_chunk(self.sock, deadline):
                self._feed(chunk)
        except ConnectionResetError:
            chunk = b""
        self.closed = chunk == b""
        return self.closed

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SSEClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the hub closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            pass
        return out


def raw_head(port: int, data: bytes, timeout: float = DEADLINE) -> bytes:
    """Send raw bytes, read until the response head is complete (or the hub closes): for
    answers that leave the connection open, where waiting for quiet would be a guess."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while b"\r\n\r\n" not in out:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def iter_responses(raw: bytes) -> Iterator[tuple[int, dict[str, str], bytes]]:
    """Split pipelined HTTP responses with Content-Length bodies."""
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            return
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        yield int(status_line.split()[1]), headers, rest[:length]
        raw = rest[length:]
