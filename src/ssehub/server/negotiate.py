"""Which protocol a new connection speaks: HTTP/2 when TLS's ALPN picked ``h2`` or when a
plain connection opens with the HTTP/2 preface (h2c with prior knowledge, ``--http2``), else
HTTP/1.1. The choice is made once; the connection then belongs to that protocol alone."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ..errors import ConfigError
from .h2 import H2Protocol
from .protocol import HttpProtocol

if TYPE_CHECKING:
    from ..app import App
    from ..settings import Settings
    from .registry import ConnectionRegistry

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""What every HTTP/2 client sends first (RFC 9113 §3.4)."""

ALPN = ["h2", "http/1.1"]


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context (``--certfile``/``--keyfile``) offering h2 and http/1.1."""
    if settings.certfile is None or settings.keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"--certfile {settings.certfile} / --keyfile {settings.keyfile}: cannot load the "
            f"certificate and key: {exc}"
        ) from None
    # HTTP/2 over TLS needs 1.2 or newer and forbids compression and renegotiation (§9.2);
    # the default context already has all three.
    context.set_alpn_protocols(ALPN)
    return context


def protocol_factory(
    app: App, registry: ConnectionRegistry, tls: bool
) -> Callable[[], asyncio.Protocol]:
    """What ``create_server`` calls for each accepted connection."""
    if tls:
        return lambda: _ByAlpn(app, registry)
    if app.settings.http2:
        return lambda: _ByPreface(app, registry)
    return lambda: HttpProtocol(app, registry)


def _hand_over(
    transport: asyncio.BaseTransport, protocol: asyncio.Protocol, data: bytes = b""
) -> None:
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if data:
        protocol.data_received(data)


class _ByAlpn(asyncio.Protocol):
    """A TLS connection: the handshake is over when this is called, so ALPN has chosen."""

    __slots__ = ("app", "registry")

    def __init__(self, app: App, registry: ConnectionRegistry) -> None:
        self.app = app
        self.registry = registry

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tls = cast(ssl.SSLObject | None, transport.get_extra_info("ssl_object"))
        chosen = tls.selected_alpn_protocol() if tls is not None else None
        protocol: asyncio.Protocol
        if chosen == "h2":
            protocol = H2Protocol(self.app, self.registry)
        else:
            protocol = HttpProtocol(self.app, self.registry)
        _hand_over(transport, protocol)


class _ByPreface(asyncio.Protocol):
    """A plain connection with ``--http2``: its first bytes say which protocol it speaks."""

    __slots__ = ("_buffer", "_timer", "_transport", "app", "registry")

    def __init__(self, app: App, registry: ConnectionRegistry) -> None:
        self.app = app
        self.registry = registry
        self._buffer = b""
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        # Until it says something it is nobody's: its own timer is its head timeout.
        self._timer = asyncio.get_running_loop().call_later(
            self.app.settings.head_timeout, transport.close
        )

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        buffer = self._buffer
        if len(buffer) < len(PREFACE) and PREFACE.startswith(buffer):
            return  # the preface, so far: wait for the rest
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert self._transport is not None
        protocol: asyncio.Protocol
        if buffer.startswith(PREFACE):
            protocol = H2Protocol(self.app, self.registry)
        else:
            protocol = HttpProtocol(self.app, self.registry)
        _hand_over(self._transport, protocol, buffer)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
