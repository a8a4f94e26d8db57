"""A HEAD of every route, then a GET on the same connection: the HEAD's answer carries no
body, so the next answer is read in step (both faces; HTTP/1.0 keep-alive and HTTP/1.1;
the GET sent after the HEAD's answer, or pipelined behind it)."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset

from ssehub.mercure import HUB_PATH, METADATA_PATH

from .support import KEY, HubProcess, free_port, serve_process, start_hub

# (request target, extra header lines): every route, its refusals (404, 405, 414, 431) too.
ROUTES = (
    ("/healthz", ""),
    ("/readyz", ""),
    ("/metrics", ""),
    ("/", ""),
    (METADATA_PATH, ""),
    (f"{HUB_PATH}?topic=urn:head", ""),
    (f"{HUB_PATH}?topic=urn:head", "Last-Event-ID: earliest\r\nOrigin: http://x\r\n"),
    (HUB_PATH, ""),
    (f"{HUB_PATH}/subscriptions", ""),
    (f"{HUB_PATH}/subscriptions/urn:head", ""),
    ("/no-such-route", ""),
    ("/" + "a" * 9000, ""),
    ("/healthz", "X-Big: " + "b" * 17000 + "\r\n"),
)
VERSIONS = ("HTTP/1.0", "HTTP/1.1")
CLOSED = b"<closed>"


def _asgi(http: str) -> HubProcess:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "ssehub.asgi:from_env", "--http", http]
    cmd += ["--port", str(port), "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSEHUB_")}
    env.update(SSEHUB_JWT_KEY=KEY, SSEHUB_ANONYMOUS="1", SSEHUB_SUBSCRIPTIONS="1")
    env.update(SSEHUB_DEMO="1")
    return serve_process(cmd, port, env=env)


@pytest.fixture(scope="module", params=["native", "asgi-httptools", "asgi-h11"])
def hub(request: pytest.FixtureRequest) -> Iterator[HubProcess]:
    if request.param == "native":
        h = start_hub("--anonymous", "--subscriptions", "--demo")
    else:
        h = _asgi(request.param.removeprefix("asgi-"))
    yield h
    h.stop()


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    return sock.recv(65536) or CLOSED


def _response(
    sock: socket.socket, buf: bytes, head: bool, deadline: float
) -> tuple[bytes, dict[str, str], bytes, bytes]:
    """The next response on ``sock`` as a client reads it (no body after a HEAD, else
    Content-Length bytes): its status line, fields, body, and what followed."""
    while b"\r\n\r\n" not in buf:
        chunk = _recv(sock, deadline)
        assert chunk != CLOSED, f"closed before a whole head: {buf[:200]!r}"
        buf += chunk
    raw, _, rest = buf.partition(b"\r\n\r\n")
    status, *lines = raw.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    assert "chunked" not in fields.get("transfer-encoding", ""), fields
    if head:
        return status.encode(), fields, b"", rest
    length = int(fields["content-length"])  # never close-delimited: the GET is kept alive
    while len(rest) < length:
        rest += _recv(sock, deadline)
    return status.encode(), fields, rest[:length], rest[length:]


def _quiet(sock: socket.socket, wait: float = 0.1) -> bytes:
    """What arrives within ``wait`` (``CLOSED`` on a close): nothing, when in step."""
    sock.settimeout(wait)
    try:
        return sock.recv(65536) or CLOSED
    except TimeoutError:
        return b""


@pytest.mark.parametrize("pipelined", [False, True], ids=["after", "pipelined"])
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: (r[0][:30] + r[1][:12]).strip())
def test_head_then_get_stays_in_step(
    hub: HubProcess, route: tuple[str, str], version: str, pipelined: bool
) -> None:
    target, extra = route
    keep = "Connection: keep-alive\r\n" if version == "HTTP/1.0" else ""
    head = f"HEAD {target} {version}\r\nHost: x\r\n{keep}{extra}\r\n".encode()
    get = f"GET /healthz {version}\r\nHost: x\r\n{keep}\r\n".encode()
    what = f"HEAD {target[:40]} {version}"
    deadline = time.monotonic() + 5
    with socket.create_connection(("127.0.0.1", hub.port), timeout=5) as sock:
        sock.sendall(head + get if pipelined else head)
        status, fields, _, rest = _response(sock, b"", True, deadline)
        assert status.startswith(b"HTTP/1.1 "), status
        if fields.get("connection", "").lower() == "close":  # refused and closed: no body
            rest += _quiet(sock)
            assert rest in (b"", CLOSED), f"{what}: a body after the head: {rest[:80]!r}"
            return
        if version == "HTTP/1.0":
            assert fields.get("connection", "").lower() == "keep-alive", (what, fields)
        if not pipelined:
            rest += _quiet(sock)
            assert rest == b"", f"{what}: bytes after the head: {rest[:80]!r} ({fields})"
            sock.sendall(get)
        status, fields, body, rest = _response(sock, rest, False, deadline)
        assert status.endswith(b" 200 OK"), (what, status, fields, body[:80])
        assert rest + _quiet(sock) == b"", f"{what}: more after the GET: {rest[:80]!r}"


def test_a_head_cut_short_gets_a_408_without_a_body() -> None:
    h = start_hub("--anonymous", "--head-timeout", "1")
    try:
        with socket.create_connection(("127.0.0.1", h.port), timeout=5) as sock:
            sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            status, fields, _, rest = _response(sock, b"", True, time.monotonic() + 4)
            assert status.startswith(b"HTTP/1.1 408 "), status
            assert fields["connection"] == "close", fields
            assert rest + _quiet(sock, 1) in (b"", CLOSED), f"a body after the head: {rest!r}"
    finally:
        h.stop()


def test_head_over_http2_sends_no_data() -> None:
    """Over HTTP/2 a HEAD's answer is one HEADERS frame that ends its stream: no DATA, and a
    HEAD of the event stream opens none; the connection then answers a GET."""
    h = start_hub("--anonymous", "--subscriptions", "--demo", "--http2")
    conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    try:
        with socket.create_connection(("127.0.0.1", h.port), timeout=5) as sock:
            conn.initiate_connection()
            asks = [("HEAD", target) for target, _ in ROUTES[:-1]] + [("GET", "/healthz")]
            streams: dict[int, tuple[str, str]] = {}
            for method, target in asks:
                stream_id = conn.get_next_available_stream_id()
                streams[stream_id] = (method, target[:40])
                head = [(":method", method), (":path", target), (":scheme", "http")]
                conn.send_headers(stream_id, [*head, (":authority", "x")], end_stream=True)
            sock.sendall(conn.data_to_send())
            status: dict[int, str] = {}
            data: dict[int, int] = {}
            ended: set[int] = set()
            deadline = time.monotonic() + 4
            while len(ended) < len(streams):
                chunk = _recv(sock, deadline)
                assert chunk != CLOSED, f"closed; ended {sorted(ended)}"
                for event in conn.receive_data(chunk):
                    if isinstance(event, ResponseReceived):
                        fields = {bytes(k): bytes(v) for k, v in event.headers or ()}
                        status[event.stream_id] = fields[b":status"].decode()
                    elif isinstance(event, DataReceived):
                        data[event.stream_id] = data.get(event.stream_id, 0) + len(event.data)
                    elif isinstance(event, StreamEnded):
                        ended.add(event.stream_id)
                    elif isinstance(event, StreamReset):
                        raise AssertionError(f"{streams[event.stream_id]} reset")
                sock.sendall(conn.data_to_send())
            heads = {streams[s]: n for s, n in data.items() if streams[s][0] == "HEAD"}
            assert heads == {}, f"DATA after a HEAD: {heads}"
            last = max(streams)
            assert status[last] == "200" and data[last] > 0, (status, data)
            assert status[min(streams)] == "200", status
    finally:
        h.stop()
