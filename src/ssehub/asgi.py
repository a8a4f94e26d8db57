"""The hub as an ASGI app, for Starlette, FastAPI or any ASGI server.

    hub = HubApp(Settings(publisher_jwt_key=..., subscriber_jwt_key=...))
    app = FastAPI(lifespan=hub.lifespan)
    app.router.routes.append(Route("/.well-known/mercure", hub, methods=["GET", "POST", "OPTIONS"]))
    ...
    await hub.hub.publish(Event(("https://example.com/books/1",), "{...}"))  # in-process

It shares the standalone server's application (``ssehub.app``: routing, auth, CORS) and
engine. What it cannot share is the transport: ASGI hands each response a ``send``
coroutine, so every stream here has a small buffer and one sender, run with its disconnect
watcher and its start in one ``TaskGroup``. That costs more per subscriber than the
standalone server's one ``write`` per fan-out (docs/benchmarks.md measures how much).

The limits hold as on the standalone server, with two differences an ASGI app cannot avoid
(docs/security.md): a stream the hub closes (slow consumer, dispatch or write timeout, token
expiry) ends its response with ``Connection: close``, which the ASGI server sends once the
client reads again, rather than being reset at once; and the dispatch timeout counts the
time one ``send`` stays blocked, i.e. it starts once the ASGI server's own buffer is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from .app import App, DeferredPublish, OpenedStream, Request, Response, build, error_response
from .contract import HistoryUnavailable, Replay
from .errors import HubError, field_value
from .hub import Hub
from .mercure import HUB_PATH
from .settings import Settings
from .settings_options import from_env as settings_from_env
from .subscriber import Subscriber, SubscriberClosed

log = logging.getLogger("ssehub.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_SLICE = 1 << 16  # bytes of one send at most: uvicorn's high-water mark


class _Stream:
    """A subscriber's bytes between the hub's fan-out and the ASGI ``send``."""

    __slots__ = (
        "chunks",
        "closed",
        "drained",
        "ends_at",
        "hub",
        "max_buffer",
        "ready",
        "release",
        "sending",
        "sends",
        "size",
        "stuck_sends",
        "stuck_since",
        "sub",
    )

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.max_buffer = hub.max_buffer
        self.chunks: list[bytes] = []
        self.size = 0
        self.ready = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()
        self.closed = False
        self.sub: Subscriber | None = None
        # What ends its accounts (subscription, template budget) when it is dropped: at
        # once, not once a send the ASGI server blocks for a reader that stopped returns.
        self.release: Callable[[], None] | None = None
        self.ends_at = 0.0  # loop time of the write timeout, set once live; 0: none
        # The sweep's view of progress: a send under way, sends completed, and since when
        # (loop time) the same send has been seen under way; no clock read per send.
        self.sending = False
        self.sends = 0
        self.stuck_since = 0.0
        self.stuck_sends = 0

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self.chunks.append(data)
        self.size += len(data)
        self.ready.set()
        self.drained.clear()
        if self.size > self.max_buffer and self.sub is not None and self.sub.live:
            self.hub.drop_slow(self.sub)

    def abort(self) -> None:
        """No more bytes: the sender ends the response (and the connection) after its send."""
        self.closed = True
        self.chunks.clear()
        self.size = 0
        self.ready.set()
        self.drained.set()
        if self.release is not None:
            # Not now: a drop comes from inside the fan-out, and closing announces.
            asyncio.get_running_loop().call_soon(self.release)

    def end(self) -> None:
        """End cleanly: what is buffered is sent first."""
        if self.sub is not None:
            self.hub.detach(self.sub)
        self.closed = True
        self.ready.set()

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("subscriber went away")
        await self.drained.wait()

    def take(self) -> bytes:
        """The buffered bytes, to send; they count against the bound until ``sent``."""
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data

    def sent(self, count: int) -> bool:
        """``count`` bytes went to the ASGI server; whether to go on (not aborted)."""
        if not self.size:
            return False
        self.size -= count
        if not self.size:
            self.drained.set()
        return True


class HubApp:
    """An ASGI app serving the Mercure endpoint, ``/metrics`` and ``/healthz``.

    Added as a route (``Route("/.well-known/mercure", hub, methods=[...])``) or served
    on its own, it answers at ``/.well-known/mercure``; mounted under a prefix, requests to the
    mount's root are hub requests.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings(demo=False)
        self._app: App | None = None
        self._lock = asyncio.Lock()
        self._streams: set[_Stream] = set()
        self._sweep: asyncio.TimerHandle | None = None

    @property
    def hub(self) -> Hub:
        """The engine, for publishing in process (``await app.hub.publish(Event(...))``)."""
        if self._app is None:
            raise RuntimeError("the hub starts with the app's lifespan or its first request")
        return self._app.hub

    async def start(self) -> None:
        """Start the engine on the running loop (idempotent)."""
        async with self._lock:
            if self._app is None:
                self._app = await build(self.settings)
                loop = asyncio.get_running_loop()
                self._sweep = loop.call_later(1.0, self._check, loop)

    async def close(self) -> None:
        """End every stream cleanly, then stop the engine."""
        if self._app is not None:
            app, self._app = self._app, None
            if self._sweep is not None:
                self._sweep.cancel()
            for stream in list(self._streams):
                stream.end()
            await app.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, _: object) -> AsyncIterator[None]:
        """A lifespan for Starlette/FastAPI: ``FastAPI(lifespan=hub.lifespan)``."""
        await self.start()
        try:
            yield
        finally:
            await self.close()

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        """Once a second, like the server's sweep."""
        self._check_streams(loop.time())
        self._sweep = loop.call_later(1.0, self._check, loop)

    def _check_streams(self, now: float) -> None:
        """Each stream's write timeout, then its dispatch timeout."""
        dispatch = self.settings.dispatch_timeout
        for stream in list(self._streams):
            if stream.closed:
                continue
            if stream.ends_at and now >= stream.ends_at:
                stream.end()
            elif dispatch and stream.sending and stream.sub is not None:
                seen = stream.sends
                if stream.stuck_since and seen == stream.stuck_sends:
                    if now - stream.stuck_since >= dispatch:
                        self.hub.drop_slow(stream.sub)
                else:  # a send under way, first seen now (or since the last one finished)
                    stream.stuck_since, stream.stuck_sends = now, seen
            else:
                stream.stuck_since = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        await self.start()
        app = self._app
        assert app is not None
        request = await _request(scope, receive, app.settings)
        if isinstance(request, Response):
            await _send(send, request)
            return
        answer = app.handle(request)
        if isinstance(answer, OpenedStream):
            await self._stream(app, answer, receive, send)
        elif isinstance(answer, DeferredPublish):
            await _send(send, await answer.wait())
        else:
            await _send(send, answer)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:  # the server stops and says why (ASGI lifespan spec)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _stream(self, app: App, opened: OpenedStream, receive: Receive, send: Send) -> None:
        """One subscriber's response: its start (replay), its sender and its disconnect
        watcher live in one TaskGroup, so none outlives the stream or its cancellation."""
        loop = asyncio.get_running_loop()
        stream = _Stream(app.hub)
        sub = stream.sub = opened.subscriber(stream)
        started: list[list[tuple[str, str]]] = []
        refusal: list[Response] = []

        def preamble(replay: Replay | None) -> bytes:
            head = opened.head(replay)
            started.append([*head.headers, ("Connection", "close")])
            return head.first

        async def start() -> None:
            try:
                await app.hub.subscribe(sub, opened.last_event_id, preamble)
            except HistoryUnavailable as exc:
                refusal.append(app.unavailable(exc, opened))
                stream.abort()
            except (SubscriberClosed, ConnectionResetError):
                stream.abort()
            except Exception:  # a fault of the hub's: a 500 if nothing went out yet, else close
                log.exception("a stream failed to start")
                if started:
                    stream.end()
                else:
                    refusal.append(app.failed(opened))
                    stream.abort()
            else:  # live: the write timeout counts from here, never from before the head
                timeout = app.settings.write_timeout
                stream.ends_at = loop.time() + timeout if timeout else 0.0

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            stream.abort()

        expiry = None
        if opened.expires is not None:
            expiry = loop.call_later(opened.expires, stream.end)

        def release() -> None:
            stream.release = None
            self._streams.discard(stream)
            if expiry is not None:
                expiry.cancel()
            app.hub.detach(sub)
            app.stream_closed(sub)

        stream.release = release
        self._streams.add(stream)
        try:
            async with asyncio.TaskGroup() as tasks:
                starting = tasks.create_task(start())
                watcher = tasks.create_task(disconnected())
                # The sender is a task of its own, not this coroutine: each wake-up of a
                # stream then resumes one frame, not the ASGI call's whole chain.
                sender = tasks.create_task(_pump(stream, started, send))
                sender.add_done_callback(lambda _: (starting.cancel(), watcher.cancel()))
        finally:
            release()
        if refusal:
            await _send(send, refusal[0])


async def _pump(stream: _Stream, started: list[list[tuple[str, str]]], send: Send) -> None:
    """Send the stream's bytes as they come; end the response once it is closed."""
    await stream.ready.wait()
    if not started:
        return  # refused or gone before its head: nothing was sent
    await send({"type": "http.response.start", "status": 200, "headers": _headers(started[0])})
    while True:
        await stream.ready.wait()
        stream.ready.clear()
        if stream.chunks:
            data = stream.take()
            # In slices of the ASGI server's high-water mark: uvicorn writes a whole body to
            # its transport once under the mark, so a bigger one would sit there uncounted.
            for at in range(0, len(data), _SLICE):
                part = data[at : at + _SLICE] if len(data) > _SLICE else data
                stream.sending = True
                await send({"type": "http.response.body", "body": part, "more_body": True})
                stream.sending = False
                stream.sends += 1
                if not stream.sent(len(part)):
                    break
        if stream.closed and not stream.chunks:
            break
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _request(scope: Scope, receive: Receive, settings: Settings) -> Request | Response:
    """The app's Request from an ASGI scope, or the refusal of one over the hub's limits."""
    path = scope.get("path", "/")
    query_bytes: bytes = scope.get("query_string", b"")
    raw_path: bytes = scope.get("raw_path") or path.encode()
    url_length = len(raw_path) + (len(query_bytes) + 1 if query_bytes else 0)
    if url_length > settings.max_url_length:
        return error_response(HubError(414, f"URL longer than {settings.max_url_length} bytes"))
    raw_headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    head_size = url_length + sum(len(name) + len(value) + 4 for name, value in raw_headers)
    if head_size > settings.max_head_size:
        return error_response(HubError(431, "request head too large"))
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if path in ("", "/"):
        path = HUB_PATH
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw_headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("utf-8", "replace")
        old = headers.get(name)
        headers[name] = value if old is None else old + ("; " if name == "cookie" else ", ") + value
    body = bytearray()
    more = scope["method"] in ("POST", "PUT", "PATCH")
    limit = settings.max_body_size
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            return error_response(HubError(413, f"body larger than {limit} bytes"))
    query = query_bytes.decode("utf-8", "replace")
    client = scope.get("client")
    address = str(client[0]) if client else None
    return Request(scope["method"], path, query, headers, bytes(body), True, client=address)


def from_env() -> HubApp:
    """A HubApp configured by ``SSEHUB_*`` variables, for ``uvicorn --factory``:

    SSEHUB_JWT_KEY=... uvicorn --factory ssehub.asgi:from_env
    """
    return HubApp(settings_from_env(os.environ, demo=False))


def _headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Headers for the ASGI server, as the standalone server writes them: sanitised."""
    return [(k.lower().encode(), field_value(v).encode()) for k, v in headers]


async def _send(send: Send, answer: Response) -> None:
    headers = _headers(answer.headers)
    if answer.status != 204:  # RFC 9110 8.6: a 204 carries no Content-Length
        headers.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.content})
