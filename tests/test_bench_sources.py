"""The load's subscriber connections to a loopback target come from loopback source addresses
of their own (a new one every 8,192 connections of a process), so the kernel does not search
an exhausted port range at every connect() past ~14,000 subscribers."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shlex
import shutil

import pytest

from ssehub import bench
from ssehub.bench import native
from ssehub.bench.native import NativeReader
from ssehub.bench.subscribers import _connect

from .support import DEADLINE, until

_HEAD = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"


def _source(pid: int, index: int) -> str:
    return str(ipaddress.IPv4Address(0x7F000001 + ((pid & 0xFFFF) << 8) + index // 8192))


async def _listener(peers: list[str]) -> asyncio.Server:
    """A stand-in SSE server on 127.0.0.1 that notes each client's address and answers a head."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_HEAD)
        await writer.drain()
        await reader.read()  # until the client goes
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


@pytest.mark.parametrize("index", [0, 8191, 8192, 3 * 8192 + 5])
def test_python_reader_source_address_per_8192_connections(index: int) -> None:
    async def main() -> list[str]:
        peers: list[str] = []
        server = await _listener(peers)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        closed = loop.create_future()

        class Client(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                transport.close()

            def connection_lost(self, exc: Exception | None) -> None:
                closed.set_result(None)

        await _connect(Client, "127.0.0.1", port, index)
        await asyncio.wait_for(closed, DEADLINE)
        await until(lambda: bool(peers), "the listener to note the client")
        server.close()
        return peers

    assert asyncio.run(main()) == [_source(os.getpid(), index)]


def test_python_reader_host_names_connect_as_before() -> None:
    async def main() -> list[str]:
        peers: list[str] = []
        server = await _listener(peers)
        port = server.sockets[0].getsockname()[1]
        await _connect(asyncio.Protocol, "localhost", port, 8192)
        await until(lambda: bool(peers), "the listener to note the client")
        server.close()
        return peers

    peers = asyncio.run(main())
    assert ipaddress.ip_address(peers[0]).is_loopback


_cc = shlex.split(os.environ.get("CC") or "cc")


@pytest.mark.skipif(not _cc or shutil.which(_cc[0]) is None, reason="no C compiler")
def test_c_reader_connects_from_its_own_loopback_address() -> None:
    async def main() -> tuple[list[str], int]:
        peers: list[str] = []
        server = await _listener(peers)
        port = server.sockets[0].getsockname()[1]
        target = bench.Target.raw(f"http://127.0.0.1:{port}/events", f"http://127.0.0.1:{port}/")
        options = bench.Options(2, http="1.0", reader="c")
        reader = await NativeReader.open(native.reader_binary(), target, 2, options)
        try:
            await asyncio.wait_for(reader.connected(), DEADLINE)
        finally:
            await reader.close()
        server.close()
        return peers, reader.proc.pid

    peers, pid = asyncio.run(main())
    assert peers == [_source(pid, 0)] * 2
