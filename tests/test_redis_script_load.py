"""When Redis has lost the hub's scripts (a restart, a failover, ``SCRIPT FLUSH``), the hub
loads them again before the append: a stall during that load sent no append, so the
publish is "not stored" (503), never "outcome unknown" (504)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from redis import Redis

from .backends import own_redis
from .support import start_hub

FLAGS = ("--anonymous", "--no-demo", "--heartbeat", "0")
# How redis-py packs SCRIPT LOAD (a two-word command, split into two bulk strings).
_SCRIPT_LOAD = b"$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n"
_HOLD = 3.0  # longer than the hub's 2 s Redis socket timeout


class HoldingProxy:
    """A TCP relay to Redis on loopback that, while ``holding`` is set, forwards a chunk
    holding SCRIPT LOAD only after ``_HOLD`` seconds: Redis stalls for that one command."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.holding = threading.Event()
        self.held = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_redis: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if to_redis and self.holding.is_set() and _SCRIPT_LOAD in chunk.upper():
                    self.held += 1
                    time.sleep(_HOLD)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        self._listener.close()
        for s in self._sockets:
            s.close()


@contextmanager
def holding_proxy(upstream: int) -> Iterator[HoldingProxy]:
    proxy = HoldingProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()


def test_a_stall_while_the_script_is_loaded_again_is_not_stored() -> None:
    with own_redis() as port, holding_proxy(port) as proxy:
        hub = start_hub(*FLAGS, "--store", f"redis://127.0.0.1:{proxy.port}/0?prefix=load")
        try:
            with hub.subscribe("load") as sub, socket.create_connection(("127.0.0.1", port)) as r:
                warm = hub.publish("load", "first").text  # the scripts are loaded now
                assert [e.id for e in sub.events(1)] == [warm]
                r.sendall(b"SCRIPT FLUSH\r\n")  # as a restart or a failover would
                assert r.recv(16).startswith(b"+OK")
                proxy.holding.set()
                answer = hub.publish("load", "never", id="load-1")
                assert proxy.held >= 1, answer.text  # the stall came during a load
                assert answer.status_code == 503, answer.text
                assert "not stored" in answer.text
                proxy.holding.clear()
                marker = hub.publish("load", "next").text
                assert [e.id for e in sub.events(1)] == [marker]  # load-1 never came
                stored = cast(
                    list[tuple[bytes, dict[bytes, bytes]]], Redis(port=port).xrange("load:events")
                )
                assert len(stored) == 2
                assert not any(
                    b"load-1" in value for _, entry in stored for value in entry.values()
                )
        finally:
            hub.stop()
