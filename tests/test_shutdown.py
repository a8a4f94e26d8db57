"""SIGTERM with events still on their way: every subscriber connected at shutdown gets every
event a publisher heard was accepted, before its stream ends cleanly."""

from __future__ import annotations

import resource
import socket
import time

from .support import HUB, start_hub

SUBSCRIBERS = 1500  # a pass over them spans several slices: the drain finds it under way
EVENTS = 40


def test_events_accepted_before_sigterm_reach_every_open_stream() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < SUBSCRIBERS + 100:  # this process's sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(SUBSCRIBERS + 100, hard), hard))
    hub = start_hub(
        "--anonymous", "--no-demo", "--max-connections", "5000", "--max-connections-per-ip", "0"
    )
    subscribers: list[socket.socket] = []
    try:
        request = (
            f"GET {HUB}?topic=urn:drain HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        for _ in range(SUBSCRIBERS):
            sub = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
            sub.sendall(request)
            subscribers.append(sub)
        heads = [b""] * SUBSCRIBERS
        for i, sub in enumerate(subscribers):
            while b"\r\n\r\n" not in heads[i]:
                heads[i] += sub.recv(4096)
            assert heads[i].startswith(b"HTTP/1.1 200"), heads[i][:100]
        body = b"topic=urn%3Adrain&data=" + b"x" * 200
        publish = (
            f"POST {HUB} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {hub.publisher_token}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as publisher:
            publisher.sendall(publish * EVENTS)
            answers = b""
            while answers.count(b"HTTP/1.1 200") < EVENTS:
                got = publisher.recv(65536)
                assert got, "the hub closed the publisher's connection"
                answers += got
            hub.proc.send_signal(15)  # SIGTERM the moment the last one is acknowledged
        deadline = time.monotonic() + 30
        for i, sub in enumerate(subscribers):
            data = heads[i][heads[i].index(b"\r\n\r\n") + 4 :]
            while not data.endswith(b"0\r\n\r\n"):  # the terminating chunk: a clean end
                assert time.monotonic() < deadline, "a stream did not end"
                got = sub.recv(65536)
                if not got:
                    break
                data += got
            assert data.count(b"data: x") == EVENTS, f"subscriber {i} got {data.count(b'data: x')}"
        assert hub.proc.wait(30) == 0
    finally:
        for sub in subscribers:
            sub.close()
        hub.stop()
