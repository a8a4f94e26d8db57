"""The hub as an ASGI app, for Starlette, FastAPI or any ASGI server.

    hub = HubApp(Settings(publisher_jwt_key=..., subscriber_jwt_key=...))
    app = FastAPI(lifespan=hub.lifespan)
    app.router.routes.append(Route("/.well-known/mercure", hub, methods=["GET", "POST", "OPTIONS"]))
    ...
    await hub.hub.publish(Event(("https://example.com/books/1",), "{...}"))  # in-process

It shares the standalone server's routing, auth, CORS and engine. What it cannot share is
the transport: ASGI hands each response a ``send`` coroutine, so every stream here has a
small buffer and one task that sends it. That costs more per subscriber than the standalone
server's one ``write`` per fan-out (docs/benchmarks.md measures how much); the slow-consumer
bound still holds (a stream whose buffer passes ``max_write_buffer`` is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from .backends import Replay, open_backend
from .errors import HubError, field_value
from .hub import Hub
from .mercure import HUB_PATH
from .server.app import App
from .server.http import Request, Response, error_response
from .settings import Settings
from .settings import from_env as settings_from_env

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _Stream:
    """A subscriber's bytes between the hub's fan-out and the ASGI ``send``."""

    __slots__ = ("chunks", "closed", "drained", "hub", "max_buffer", "ready", "size", "sub")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.max_buffer = hub.max_buffer
        self.chunks: list[bytes] = []
        self.size = 0
        self.ready = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()
        self.closed = False
        self.sub: Any = None

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self.chunks.append(data)
        self.size += len(data)
        self.ready.set()
        self.drained.clear()
        if self.size > self.max_buffer and self.sub is not None and self.sub.held is None:
            self.hub.drop_slow(self.sub)

    def abort(self) -> None:
        self.closed = True
        self.ready.set()

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("subscriber went away")
        await self.drained.wait()

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.size = 0
        self.drained.set()
        return data


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

    @property
    def hub(self) -> Hub:
        """The engine, for publishing in process (``await app.hub.publish(Event(...))``)."""
        if self._app is None:
            raise RuntimeError("the hub starts with the app's lifespan or its first request")
        return self._app.hub

    async def start(self) -> None:
        """Start the engine on the running loop (idempotent)."""
        async with self._lock:
            if self._app is not None:
                return
            s = self.settings
            backend = open_backend(s.store, s.history_size, s.history_max_age, s.history_max_bytes)
            hub = Hub(backend, heartbeat=s.heartbeat, max_buffer=s.max_write_buffer)
            await hub.start()
            app = App(s, hub)
            await app.auth.start()
            self._app = app

    async def close(self) -> None:
        if self._app is not None:
            app, self._app = self._app, None
            await app.hub.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, _: object) -> AsyncIterator[None]:
        """A lifespan for Starlette/FastAPI: ``FastAPI(lifespan=hub.lifespan)``."""
        await self.start()
        try:
            yield
        finally:
            await self.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        await self.start()
        app = self._app
        assert app is not None
        request = await self._request(scope, receive, app.settings.max_body_size)
        if isinstance(request, Response):
            await _send(send, request)
            return
        if app.is_stream(request):
            await self._stream(app, request, receive, send)
            return
        pending = app.handle(request)
        await _send(send, pending if isinstance(pending, Response) else await pending)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _request(scope: Scope, receive: Receive, limit: int) -> Request | Response:
        path = scope.get("path", "/")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path in ("", "/"):
            path = HUB_PATH
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("utf-8", "replace")
            old = headers.get(name)
            headers[name] = (
                value if old is None else old + ("; " if name == "cookie" else ", ") + value
            )
        body = bytearray()
        more = scope["method"] in ("POST", "PUT", "PATCH")
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return error_response(HubError(413, f"body larger than {limit} bytes"), True)
        query = scope.get("query_string", b"").decode("utf-8", "replace")
        return Request(scope["method"], path, query, headers, bytes(body), True)

    async def _stream(self, app: App, request: Request, receive: Receive, send: Send) -> None:
        stream = _Stream(app.hub)
        try:
            sub, last_event_id, preamble, expires = app.open_stream(request, stream)
        except HubError as error:
            await _send(send, error_response(error, True))
            return
        stream.sub = sub
        started = asyncio.Event()
        head: list[tuple[str, str]] = []

        def first_bytes(replay: Replay | None) -> bytes:
            headers, first = preamble(replay)
            head.extend(headers)
            started.set()
            return first

        async def pump() -> None:
            await started.wait()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": _encode_headers(head),
                }
            )
            while not stream.closed:
                await stream.ready.wait()
                stream.ready.clear()
                if stream.chunks:
                    await send(
                        {"type": "http.response.body", "body": stream.take(), "more_body": True}
                    )
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            stream.abort()

        loop = asyncio.get_running_loop()
        expiry = loop.call_later(expires, stream.abort) if expires is not None else None
        sender = asyncio.ensure_future(pump())
        watcher = asyncio.ensure_future(disconnected())
        try:
            await app.hub.subscribe(sub, last_event_id, first_bytes)
        except HubError as error:
            sender.cancel()
            watcher.cancel()
            app.stream_closed(sub)
            await _send(send, error_response(error, True))
            return
        except ConnectionResetError:
            pass
        try:
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stream.abort()
            app.hub.detach(sub)
            app.stream_closed(sub)
            if expiry is not None:
                expiry.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender


def from_env() -> HubApp:
    """A HubApp configured by ``SSEHUB_*`` variables, for ``uvicorn --factory``:

    SSEHUB_JWT_KEY=... uvicorn --factory ssehub.asgi:from_env
    """
    return HubApp(settings_from_env(os.environ, demo=False))


def _encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Headers for the ASGI server, as the standalone server writes them: sanitised."""
    return [(k.lower().encode(), field_value(v).encode()) for k, v in headers]


async def _send(send: Send, answer: Response) -> None:
    headers = _encode_headers(answer.headers)
    if answer.status != 204:  # RFC 9110 8.6: a 204 carries no Content-Length
        headers.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.content})
