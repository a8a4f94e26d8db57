"""Soak: normal subscribers and a publisher alongside hostile clients, for minutes.

Hostile clients: slowloris heads, random bytes, subscribers that never read, connect/close
churn, publishes with forged tokens, template-bomb selectors, anonymous subscribers that
come and go (the hub runs with --subscriptions), signed tokens with CR/LF in a JWT header
field via ?authorization=, publishes whose ids have leading/trailing spaces, a valid
publish pipelined with garbage, publishers that half-close, and earliest-replay
subscribers that never read. What each hostile kind got back is counted and printed; the
only assertion is that every normal subscriber received every acknowledged event (ratio
exactly 1.0). The hub's RSS is sampled throughout.

    python benchmarks/soak.py --minutes 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from typing import cast
from urllib.parse import quote, urlencode

import jwt
import uvloop
from _common import HUB_PATH, KEY, free_port, rss_kib, start_hub, stop_hub

TOPIC = "urn:soak:normal"


class Counter(asyncio.Protocol):
    """A normal subscriber: counts events (each ends with a blank line)."""

    def __init__(self) -> None:
        self.events = 0
        self.tail = b""
        self.open = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(
            f"GET {HUB_PATH}?topic={TOPIC} HTTP/1.1\r\nHost: soak\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.events += (self.tail + data).count(b"\n\n")
        self.tail = data[-1:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False


def _crlf_token(rng: random.Random) -> str:
    """A token signed with the hub's key whose header carries CR/LF in ``alg`` or ``kid``."""
    field = rng.choice(("alg", "kid"))
    header = {"alg": "HS256", "typ": "JWT", field: "HS256\r\nX-Injected: yes"}
    claims = {"mercure": {"subscribe": ["*"]}}

    def part(value: object) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    signing = part(header) + b"." + part(claims)
    signature = base64.urlsafe_b64encode(
        hmac.new(KEY.encode(), signing, hashlib.sha256).digest()
    ).rstrip(b"=")
    return (signing + b"." + signature).decode()


def _publish(token: str, form: str, close: bool = True) -> bytes:
    return (
        f"POST {HUB_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        + ("Connection: close\r\n" if close else "")
        + f"Content-Length: {len(form)}\r\n\r\n{form}"
    ).encode()


async def _read(s: socket.socket, until: bytes | None = b"\r\n\r\n", wait: float = 2) -> bytes:
    """Bytes from ``s`` until ``until`` appears, the peer closes, or ``wait`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    got = b""
    while until is None or until not in got:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(s, 65536), deadline - loop.time())
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        got += chunk
    return got


def _closed_by_peer(s: socket.socket) -> bool:
    """Whether the peer has closed ``s``, once what it sent is read (up to 16 MiB)."""
    s.setblocking(False)
    got = 0
    try:
        while got < 16 << 20:
            chunk = s.recv(1 << 16)
            if not chunk:
                return True
            got += len(chunk)
    except BlockingIOError:
        return False
    except OSError:  # reset: closed with unsent bytes, as a slow reader is
        return True
    return False


def _status(answer: bytes) -> str:
    """The status code of the first response in ``answer`` ("none" when there is none)."""
    if not answer.startswith(b"HTTP/1.1 "):
        return "none"
    return answer[9:12].decode("latin-1")


class Hostile:
    """One hostile client per tick, by turns; counts what each kind got back.

    The soak asserts nothing about these answers (other branches fix what they reveal);
    it reports them and checks that normal subscribers lose nothing meanwhile.
    """

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.counts: dict[str, dict[str, int]] = {}
        self.held: dict[socket.socket, str] = {}  # sockets kept open, by kind
        self.rng = random.Random(7)
        self.forged = jwt.encode(
            {"mercure": {"publish": ["*"]}}, "not-the-key-0123456789-0123456789"
        )
        self.tick = 0

    def count(self, kind: str, outcome: str) -> None:
        kinds = self.counts.setdefault(kind, {})
        kinds[outcome] = kinds.get(outcome, 0) + 1

    async def run(self, stop: asyncio.Event) -> None:
        kinds = [
            self.slowloris,
            self.garbage,
            self.churn,
            self.forged_token,
            self.template_bomb,
            self.crlf_token,
            self.spaced_id,
            self.pipelined,
            self.half_close,
            self.subscription_churn,
        ]
        tasks: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            self.tick += 1
            if self.tick % 50 == 0:
                kind = self.stopped_reader
            elif self.tick % 50 == 25:
                kind = self.stalled_replay
            else:
                kind = kinds[self.tick % len(kinds)]
            if len(tasks) < 100:  # a hub that stops answering must not pile up tasks here
                task = asyncio.create_task(self._one(kind))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while len(self.held) > 200:  # keep the open-file count bounded
                oldest = next(iter(self.held))
                del self.held[oldest]
                oldest.close()
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        for s, held_as in self.held.items():  # did the hub let go of the ones still held?
            self.count(held_as, "closed by the hub" if _closed_by_peer(s) else "open at the end")
            s.close()

    async def _one(self, kind: Callable[[socket.socket], Awaitable[None]]) -> None:
        s = socket.socket()
        s.setblocking(False)
        try:
            if kind in (self.stopped_reader, self.stalled_replay):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", self.port))
            await kind(s)
        except OSError:
            self.count(kind.__name__, "refused")
            s.close()
        if s not in self.held:
            s.close()

    async def _send(self, s: socket.socket, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(s, data)

    async def slowloris(self, s: socket.socket) -> None:
        """A head that never ends."""
        await self._send(s, b"POST /.well-known/mercure HTTP/1.1\r\nX-Slow: ")
        self.held[s] = "slowloris"
        self.count("slowloris", "held")

    async def garbage(self, s: socket.socket) -> None:
        await self._send(s, self.rng.randbytes(self.rng.randint(1, 2000)))
        self.count("garbage", "sent")

    async def stopped_reader(self, s: socket.socket) -> None:
        """A subscriber to the normal topic that never reads."""
        await self._send(s, f"GET {HUB_PATH}?topic={TOPIC} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.held[s] = "stopped_reader"
        self.count("stopped_reader", "held")

    async def stalled_replay(self, s: socket.socket) -> None:
        """Asks for the whole history of the normal topic and never reads it."""
        await self._send(
            s,
            f"GET {HUB_PATH}?topic={TOPIC}&lastEventID=earliest HTTP/1.1\r\n"
            "Host: x\r\n\r\n".encode(),
        )
        self.held[s] = "stalled_replay"
        self.count("stalled_replay", "held")

    async def churn(self, s: socket.socket) -> None:
        """Connect, subscribe, close at once."""
        await self._send(s, f"GET {HUB_PATH}?topic=churn HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.count("churn", "sent")

    async def subscription_churn(self, s: socket.socket) -> None:
        """An anonymous subscriber that waits for its stream to open, then leaves (with
        --subscriptions, each one publishes two subscription events)."""
        topic = f"urn:soak:churn:{self.tick}"
        await self._send(s, f"GET {HUB_PATH}?topic={topic} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.count("subscription_churn", _status(await _read(s)))

    async def forged_token(self, s: socket.socket) -> None:
        await self._send(s, _publish(self.forged, "topic=x&data=y"))
        self.count("forged_token", "sent")

    async def template_bomb(self, s: socket.socket) -> None:
        """A selector of hundreds of adjacent expressions (refused by bounded hubs)."""
        bomb = quote("urn:soak:{+a}" + "{/b}{.c}" * 150 + f"{{;d{self.tick}}}")
        await self._send(s, f"GET {HUB_PATH}?topic={bomb} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.count("template_bomb", _status(await _read(s)))

    async def crlf_token(self, s: socket.socket) -> None:
        """A signed token with CR/LF in a JWT header field, in ?authorization=."""
        query = urlencode({"topic": "urn:soak:hostile", "authorization": _crlf_token(self.rng)})
        await self._send(s, f"GET {HUB_PATH}?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = (await _read(s)).partition(b"\r\n\r\n")[0].lower()
        injected = b"\r\nx-injected:" in head
        self.count("crlf_token", _status(head.upper()) + (" injected" if injected else ""))

    async def spaced_id(self, s: socket.socket) -> None:
        """A publish whose id has leading and trailing spaces."""
        form = urlencode(
            {"topic": "urn:soak:hostile", "data": "x", "id": f"  spaced-{self.tick}  "}
        )
        await self._send(s, _publish(self.token, form))
        answer = await _read(s, None)
        self.count("spaced_id", _status(answer))

    async def pipelined(self, s: socket.socket) -> None:
        """A valid publish and garbage in one send: the valid one must still be answered."""
        valid = _publish(self.token, "topic=urn:soak:hostile&data=pipelined", close=False)
        await self._send(s, valid + b"\x00\xffNOT HTTP\r\n\r\n")
        answer = await _read(s, None)
        statuses = [_status(b"HTTP/1.1 " + part) for part in answer.split(b"HTTP/1.1 ")[1:]]
        self.count("pipelined", "+".join(statuses) or "none")

    async def half_close(self, s: socket.socket) -> None:
        """A publish followed by shutdown(SHUT_WR): the answer must still come."""
        await self._send(s, _publish(self.token, "topic=urn:soak:hostile&data=half", close=False))
        s.shutdown(socket.SHUT_WR)
        self.count("half_close", _status(await _read(s, None)))


async def soak(port: int, pid: int, minutes: float, subscribers: int, rate: float) -> int:
    loop = asyncio.get_running_loop()
    normal = []
    for _ in range(subscribers):
        _, sub = await loop.create_connection(Counter, "127.0.0.1", port)
        normal.append(sub)
    token = jwt.encode({"mercure": {"publish": ["*"]}}, KEY)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = f"topic={TOPIC}&data=" + "x" * 100
    request = (
        f"POST {HUB_PATH} HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    hostile = Hostile(port, token)
    counts = hostile.counts
    stop = asyncio.Event()
    attack = asyncio.create_task(hostile.run(stop))
    await asyncio.sleep(1)
    before = peak = rss_kib([pid])
    acked = 0
    started = time.monotonic()
    next_sample = started
    print(f"rss at start {before / 1024:.1f} MiB")
    while (elapsed := time.monotonic() - started) < minutes * 60:
        writer.write(request)
        await writer.drain()
        line = await reader.readuntil(b"\r\n\r\n")
        length = int(line.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        if line.startswith(b"HTTP/1.1 200"):
            acked += 1
        if time.monotonic() >= next_sample:
            now = rss_kib([pid])
            peak = max(peak, now)
            total = sum(sum(c.values()) for c in counts.values())
            print(f"  t={elapsed:5.0f}s rss {now / 1024:6.1f} MiB  acked {acked}  hostile {total}")
            next_sample += 10
        await asyncio.sleep(max(0.0, started + acked / rate - time.monotonic()))
    stop.set()
    await attack
    deadline = time.monotonic() + 10
    while any(s.events < acked for s in normal) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    after = rss_kib([pid])
    got = [s.events for s in normal]
    complete = sum(1 for g in got if g == acked)
    print(
        f"published {acked} events; {complete}/{subscribers} normal subscribers got all of "
        f"them (min {min(got)}, max {max(got)}); still open: {sum(s.open for s in normal)}"
    )
    print(
        f"hub rss: start {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
        f"end {after / 1024:.1f} MiB"
    )
    print("hostile clients, by kind, what they got:")
    for kind, outcomes in sorted(counts.items()):
        print(f"  {kind:20} {', '.join(f'{k}: {v}' for k, v in sorted(outcomes.items()))}")
    return 0 if complete == subscribers else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="normal events/s")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {1})
    port = free_port()
    hub = start_hub(
        port,
        [
            "--anonymous",
            "--no-demo",
            "--heartbeat",
            "5",
            "--max-write-buffer",
            "262144",
            "--dispatch-timeout",
            "5",
            "--head-timeout",
            "2",
            "--max-connections-per-ip",
            "0",
            "--subscriptions",
        ],
        "0",
    )
    try:
        code = uvloop.run(soak(port, hub.pid, args.minutes, args.subscribers, args.rate))
    finally:
        stop_hub(hub)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
