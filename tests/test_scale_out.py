"""Durability and scale-out over real processes: SQLite across kill -9, Redis across nodes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .backends import answers, redis_store
from .support import HubProcess, SSEClient, free_port, start_hub, wait_until

FLAGS = ("--anonymous", "--no-demo", "--heartbeat", "0")


@pytest.fixture
def tmp_db() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"{tmp}/hub.db"


def publish_stream(hub: HubProcess, topic: str, stop: threading.Event, acked: list[str]) -> None:
    """Publish as fast as answers come; record every acknowledged id, stop on any failure."""
    with httpx.Client(timeout=5) as client:
        i = 0
        while not stop.is_set():
            try:
                r = client.post(
                    hub.url,
                    data={"topic": topic, "data": f"n{i}"},
                    headers={"Authorization": f"Bearer {hub.publisher_token}"},
                )
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                acked.append(r.text)
            i += 1


def test_sqlite_kill_9_loses_no_acknowledged_event(tmp_db: str) -> None:
    hub = start_hub(*FLAGS, "--store", f"sqlite:{tmp_db}")
    acked: list[str] = []
    stop = threading.Event()
    writer = threading.Thread(target=publish_stream, args=(hub, "t", stop, acked))
    writer.start()
    try:
        wait_until(lambda: len(acked) >= 200, "200 acknowledged publishes")
    finally:
        hub.proc.send_signal(signal.SIGKILL)  # mid-stream: no flush, no goodbye
        hub.proc.wait()
        stop.set()
        writer.join()

    again = start_hub(*FLAGS, "--store", f"sqlite:{tmp_db}", "--history-size", "100000")
    try:
        with again.subscribe("t", last_event_id="earliest") as sub:
            assert sub.headers["last-event-id"] == "earliest"
            got = [e.id for e in sub.events(len(acked))]
        # Every acknowledged event is there, in order (an unacknowledged last one may follow).
        assert got == acked
        with again.subscribe("t", last_event_id=acked[len(acked) // 2]) as sub:
            assert sub.headers["last-event-id"] == acked[len(acked) // 2]
            rest = [e.id for e in sub.events(len(acked) - len(acked) // 2 - 1)]
            assert rest == acked[len(acked) // 2 + 1 :]
            answer = again.publish("t", "after restart")
            assert answer.status_code == 200
            tail = [e.data for e in sub.events(1)]
            if tail != ["after restart"]:  # one committed event whose answer the kill cut off
                tail += [e.data for e in sub.events(1)]
                assert tail[1] == "after restart"
    finally:
        again.stop()


@pytest.fixture
def two_nodes() -> Iterator[tuple[HubProcess, HubProcess]]:
    store = redis_store()
    a = start_hub(*FLAGS, "--store", store)
    b = start_hub(*FLAGS, "--store", store)
    yield a, b
    a.stop()
    b.stop()


def test_publish_on_one_node_receive_on_the_other(two_nodes: tuple[HubProcess, HubProcess]) -> None:
    a, b = two_nodes
    with b.subscribe("https://example.com/books/{id}") as on_b, a.subscribe("*") as on_a:
        ids = [a.publish("https://example.com/books/1", f"a{i}").text for i in range(5)]
        ids += [
            b.publish("https://example.com/books/2", f"b{i}", id=f"custom-{i}").text
            for i in range(5)
        ]
        assert [e.id for e in on_b.events(10)] == ids
        assert [e.id for e in on_a.events(10)] == ids
        assert ids[5:] == [f"custom-{i}" for i in range(5)]


def test_subscriber_moves_between_nodes_without_loss_or_duplicate(
    two_nodes: tuple[HubProcess, HubProcess],
) -> None:
    a, b = two_nodes
    published: list[str] = []
    with a.subscribe("move") as first:
        published += [a.publish("move", f"x{i}").text for i in range(10)]
        seen = [e.id for e in first.events(10)]
    assert seen == published
    # While it is away, both nodes go on publishing; it comes back on the other node.
    published += [a.publish("move", f"y{i}").text for i in range(5)]
    published += [b.publish("move", f"z{i}").text for i in range(5)]
    with b.subscribe("move", last_event_id=seen[-1]) as second:
        assert second.headers["last-event-id"] == seen[-1]
        seen += [e.id for e in second.events(10)]
        published.append(a.publish("move", "live").text)
        seen += [e.id for e in second.events(1)]
        second.next_is(b.publish("move", "marker").text)
    assert seen == published
    assert len(set(seen)) == len(seen)


def _redis(port: int, data_dir: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is needed to stop and restart Redis under load")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--dir",
            data_dir,
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not answers(port):
        if time.monotonic() > deadline:
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    return proc


def test_redis_restart_under_load_loses_nothing_acknowledged() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        redis = _redis(port, data_dir)
        store = f"redis://127.0.0.1:{port}/0?prefix=restart"
        hub = start_hub(*FLAGS, "--store", store)
        try:
            with hub.subscribe("load") as sub:
                acked: list[str] = []
                failures = 0
                with httpx.Client(timeout=5) as client:

                    def send(i: int) -> int:
                        r = client.post(
                            hub.url,
                            data={"topic": "load", "data": f"n{i}"},
                            headers={"Authorization": f"Bearer {hub.publisher_token}"},
                        )
                        if r.status_code == 200:
                            acked.append(r.text)
                        else:
                            assert r.status_code == 503, r.text
                            assert "Redis" in r.text
                        return r.status_code

                    for i in range(100):
                        send(i)
                    redis.send_signal(signal.SIGTERM)
                    redis.wait()
                    for i in range(100, 110):
                        failures += send(i) == 503
                    redis = _redis(port, data_dir)
                    deadline = time.monotonic() + 15
                    i = 110
                    while len(acked) < 200 and time.monotonic() < deadline:
                        send(i)
                        i += 1
                assert failures == 10  # publishes fail fast while Redis is away
                got = [e.id for e in sub.events(len(acked), timeout=20)]
                assert got == acked  # every acknowledged event, once, in order
                assert not sub.closed
        finally:
            hub.stop()
            redis.terminate()
            redis.wait()


def server_end_owner(client: socket.socket, port: int, pids: list[int]) -> int:
    """Which of ``pids`` holds the accepted end of ``client``'s connection to ``port``."""
    local = f":{client.getsockname()[1]:04X}"
    inodes = {
        fields[9]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if (fields := line.split())[1].endswith(f":{port:04X}") and fields[2].endswith(local)
    }
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in {f"socket:[{inode}]" for inode in inodes}:
                    return pid
    raise AssertionError(f"no worker holds the connection from port {local}")


def test_workers_share_the_port_and_the_stream() -> None:
    hub = start_hub(*FLAGS, "--store", redis_store(), "--workers", "2")
    subs: list[SSEClient] = []
    try:
        pid = hub.proc.pid
        workers = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        assert len(workers) == 2
        # The kernel spreads connections over the workers that listen by a hash of their
        # addresses, and a worker may start listening after the first: subscribe until each
        # worker holds at least two.
        held: dict[int, int] = dict.fromkeys(workers, 0)
        while min(held.values()) < 2 and len(subs) < 200:
            subs.append(hub.subscribe("w"))
            held[server_end_owner(subs[-1].sock, hub.port, workers)] += 1
        assert min(held.values()) >= 2, held
        ids = [hub.publish("w", f"e{i}").text for i in range(5)]
        for sub in subs:
            assert [e.id for e in sub.events(5)] == ids
    finally:
        for sub in subs:
            sub.close()
        hub.stop()


def test_workers_refuse_a_memory_store() -> None:
    with pytest.raises(RuntimeError, match="shared store"):
        start_hub(*FLAGS, "--workers", "2")


def test_workers_refuse_a_sqlite_store(tmp_path: Path) -> None:
    """Each worker would deliver only what was published through it: refused at startup,
    as a usage error (exit code 2) with a one-line reason."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssehub.cli",
            "serve",
            "--port",
            str(free_port()),
            "--workers",
            "2",
            "--store",
            f"sqlite:{tmp_path / 'events.db'}",
            "--jwt-key",
            "k" * 32,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert "--workers" in done.stderr and "SQLite delivers live events only" in done.stderr
    assert "Traceback" not in done.stderr
