"""The soak's hostile clients: one per tick, by turns, each counting what it got back."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

import h2.config
import h2.connection
import h2.events
import h11
import jwt
from _common import HUB_PATH, KEY

TOPIC = "urn:soak:normal"
# Every route the hub answers, a HEAD of each: the answer has no body, and the connection
# must stay in step for the request after it.
HEAD_PATHS = (
    "/healthz",
    "/metrics",
    "/",
    f"{HUB_PATH}?topic=urn:soak:head",
    HUB_PATH,
    f"{HUB_PATH}/subscriptions",
    f"{HUB_PATH}/subscriptions/urn:soak:head",
    "/no-such-route",
)


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


async def _some(s: socket.socket, wait: float) -> bytes:
    """What ``s`` has next (empty when the peer closed or ``wait`` seconds passed)."""
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.sock_recv(s, 65536), wait)
    except (TimeoutError, OSError):
        return b""


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
            self.head_keep_alive,
            self.wide_publish,
            self.long_templates,
            self.h2_streams,
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

    async def head_keep_alive(self, s: socket.socket) -> None:
        """A HEAD of some route, then a GET /healthz on the same connection (HTTP/1.0 with
        keep-alive or 1.1): h11 reads both answers and says whether they stayed in step."""
        path = HEAD_PATHS[self.tick % len(HEAD_PATHS)]
        version = b"1.0" if self.tick % 3 == 0 else b"1.1"
        keep = [(b"Connection", b"keep-alive")] if version == b"1.0" else []
        client = h11.Connection(h11.CLIENT)
        asks = [(b"HEAD", path.encode()), (b"GET", b"/healthz")]
        for method, target in asks:
            headers = [(b"Host", b"soak"), *keep]
            request = h11.Request(method=method, target=target, headers=headers)
            await self._send(s, client.send(request) + client.send(h11.EndOfMessage()))
            try:
                outcome = await self._answer(s, client)
            except h11.RemoteProtocolError as exc:
                self.count("head_keep_alive", f"desync after HEAD {path}: {exc}")
                return
            if outcome is None:
                self.count("head_keep_alive", f"no answer to {method.decode()} {path}")
                return
            if method == b"GET" or client.our_state is h11.MUST_CLOSE:
                break
            client.start_next_cycle()
        self.count("head_keep_alive", "in step")

    async def _answer(self, s: socket.socket, client: h11.Connection) -> int | None:
        """The status of the next whole response on ``s``, or None if none came in time."""
        status = None
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                chunk = await _some(s, 1)
                if not chunk:
                    return None
                client.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status

    async def wide_publish(self, s: socket.socket) -> None:
        """A publish of many long topics and a large body: history must count every byte."""
        topics = [f"urn:soak:wide:{self.tick}:{i}:" + "t" * 900 for i in range(90)]
        form = urlencode([*(("topic", t) for t in topics), ("data", "w" * 20_000)])
        await self._send(s, _publish(self.token, form))
        self.count("wide_publish", _status(await _read(s, None)))

    async def long_templates(self, s: socket.socket) -> None:
        """An anonymous subscriber with four long URI templates, held open: each is tried
        against every new topic, within the per-address bound."""
        query = "&".join(
            "topic=" + quote(f"urn:soak:tpl:{i}:" + "x" * 1800 + "{/id}{?q}") for i in range(4)
        )
        await self._send(s, f"GET {HUB_PATH}?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status = _status(await _read(s))
        if status == "200":
            self.held[s] = "long_templates"
        self.count("long_templates", status)

    async def h2_streams(self, s: socket.socket) -> None:
        """HTTP/2 with prior knowledge: ten subscribe streams on one connection, each must
        open (a 200 HEADERS), then the connection goes."""
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        for i in range(10):
            conn.send_headers(
                conn.get_next_available_stream_id(),
                [
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":authority", "soak"),
                    (":path", f"{HUB_PATH}?topic=urn:soak:h2:{i}"),
                ],
                end_stream=True,
            )
        await self._send(s, conn.data_to_send())
        opened = 0
        while opened < 10:
            chunk = await _some(s, 2)
            if not chunk:
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    opened += dict(event.headers).get(b":status") == b"200"
            await self._send(s, conn.data_to_send())
        self.count("h2_streams", f"{opened}/10 opened")
