"""Durability and scale-out over real processes: SQLite across kill -9, Redis across nodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
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

from ssehub.backends.redis import RedisBackend
from ssehub.events import Event
from ssehub.mercure import GAP_EVENT
from ssehub.sse import Decoder, ServerEvent

from .backends import own_redis, redis_store, start_redis
from .support import (
    HUB,
    HubProcess,
    SSEClient,
    free_port,
    listening,
    start_hub,
    wait_until,
)

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
    durable = ("--dir", data_dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always")
    return start_redis(binary, port, *durable)


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
                        else:  # not stored, or (a publish cut off mid-way) not known
                            assert r.status_code in (503, 504), r.text
                            assert "Redis" in r.text
                        return r.status_code

                    for i in range(100):
                        send(i)
                    redis.send_signal(signal.SIGTERM)
                    redis.wait()
                    for i in range(100, 110):
                        failures += send(i) != 200
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
        # The kernel spreads connections over the workers by a hash of their addresses:
        # subscribe until each worker holds at least two.
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


def test_start_hub_waits_for_every_worker() -> None:
    """The support's start returns once every worker listens, not the first one only: a test
    spreading connections over workers must find them all there."""
    hub = start_hub(*FLAGS, "--store", redis_store(), "--workers", "3")
    try:
        assert listening(hub.port) == 3
    finally:
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


def append_directly(store: str, ids: list[str], topic: str, history_size: int) -> None:
    """Publish through a backend of the test's own: a node that is not paused."""

    async def go() -> None:
        backend = RedisBackend(store, history_size)
        try:
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                await backend.append([Event((topic,), "x", id=i) for i in chunk])
        finally:
            await backend.close()

    asyncio.run(go())


@contextlib.contextmanager
def paused(hub: HubProcess) -> Iterator[None]:
    hub.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        hub.proc.send_signal(signal.SIGCONT)


def test_paused_node_gets_every_event_of_a_burst_longer_than_the_stream() -> None:
    store = redis_store()
    a = start_hub(*FLAGS, "--store", store, "--history-size", "5")  # a stream of 1024
    b = start_hub(*FLAGS, "--store", store, "--history-size", "5")
    try:
        with b.subscribe("burst") as on_b:
            acked = []
            with paused(b), httpx.Client(timeout=10) as client:
                for i in range(1100):
                    r = client.post(
                        a.url,
                        data={"topic": "burst", "data": f"n{i}"},
                        headers={"Authorization": f"Bearer {a.publisher_token}"},
                    )
                    assert r.status_code == 200, r.text
                    acked.append(r.text)
            got = on_b.events(1100, timeout=30)
            assert [e.event for e in got] == ["message"] * 1100  # no gap notice either
            assert [e.id for e in got] == acked
    finally:
        a.stop()
        b.stop()


def test_node_pushed_past_the_stream_tells_its_subscribers_of_the_gap() -> None:
    store = redis_store()
    b = start_hub(*FLAGS, "--store", store, "--history-size", "5")
    try:
        with b.subscribe("far") as on_b:
            # Past the stream's 1024 + 10,000 (and the 1000 a blocked read may already hold)
            ids = [f"far-{i}" for i in range(14_000)]
            with paused(b):
                append_directly(store, ids, "far", 5)
            got: list[ServerEvent] = []
            while not got or got[-1].id != ids[-1]:
                got += on_b.events(1, timeout=30)
            # What the node read before it was pushed past, the notice, then the rest.
            [at] = [i for i, e in enumerate(got) if e.event == GAP_EVENT]
            assert [e.id for e in got[:at]] == ids[:at]
            notice = json.loads(got[at].data)
            resumed = ids.index(notice["replayFrom"])
            assert notice["missed"] == resumed - at > 0
            assert [e.id for e in got[at + 1 :]] == ids[resumed:]
    finally:
        b.stop()


class StoppedSubscribe:
    """A subscribe sent to a paused hub; its answer is read once the hub runs again."""

    def __init__(self, hub: HubProcess, topic: str, last_event_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", hub.port), timeout=30)
        head = f"GET {HUB}?topic={topic} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {last_event_id}"
        self.sock.sendall(head.encode() + b"\r\n\r\n")
        self.decoder = Decoder()
        self.buffer = b""
        self.head_read = False
        self.pending: list[ServerEvent] = []

    def events(self, count: int) -> list[ServerEvent]:
        while len(self.pending) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {len(self.pending)} events")
            if not self.head_read:
                self.buffer += chunk
                if b"\r\n\r\n" not in self.buffer:
                    continue
                head, _, chunk = self.buffer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                self.head_read = True
            self.pending.extend(self.decoder.feed(chunk))
        out, self.pending = self.pending[:count], self.pending[count:]
        return out


def test_resume_on_a_lagging_node_repeats_nothing() -> None:
    store = redis_store()
    b = start_hub(*FLAGS, "--store", store)
    try:
        ids = [f"lag-{i}" for i in range(5000)]
        with paused(b):
            append_directly(store, ids, "lag", 10_000)  # another node's subscriber saw them all
            # It saw up to lag-3999 and comes back here, while this node has read none yet.
            resume = StoppedSubscribe(b, "lag", ids[3999])
        try:
            got = resume.events(1000)
            assert [e.id for e in got] == ids[4000:]
        finally:
            resume.sock.close()
    finally:
        b.stop()


def test_redis_timeout_answers_outcome_unknown_and_a_retry_is_no_duplicate() -> None:
    with own_redis("--enable-debug-command", "yes") as port:
        hub = start_hub(*FLAGS, "--store", f"redis://127.0.0.1:{port}/0?prefix=slow")
        try:
            with hub.subscribe("slow") as sub, socket.create_connection(("127.0.0.1", port)) as r:
                warm = hub.publish("slow", "first").text  # the hub's script is loaded now
                assert [e.id for e in sub.events(1)] == [warm]
                r.sendall(b"DEBUG SLEEP 3\r\n")  # longer than the hub's 2 s socket timeout
                answer = hub.publish("slow", "once", id="slow-1")
                assert answer.status_code == 504, answer.text
                assert "may have been stored" in answer.text
                assert "same id is safe" in answer.text
                assert r.recv(16).startswith(b"+OK")
                # It was stored and delivered after all ...
                assert [e.id for e in sub.events(1)] == ["slow-1"]
                # ... and the publisher's retry, as the answer advised, is not a second copy.
                again = hub.publish("slow", "once", id="slow-1")
                assert again.status_code == 200
                assert again.text == "slow-1"
                marker = hub.publish("slow", "next").text
                assert [e.id for e in sub.events(1)] == [marker]
        finally:
            hub.stop()


def test_connections_redis_closed_while_idle_are_reopened() -> None:
    with own_redis() as port:
        hub = start_hub(*FLAGS, "--store", f"redis://127.0.0.1:{port}/0?prefix=idle")
        try:
            first = hub.publish("idle", "1")
            assert first.status_code == 200
            with socket.create_connection(("127.0.0.1", port)) as r:
                r.sendall(b"CONFIG SET timeout 1\r\n")
                assert r.recv(16).startswith(b"+OK")

                def closed_idle_connections() -> None:
                    """Wait until Redis has closed the hub's idle command connection."""
                    deadline = time.monotonic() + 10
                    while True:
                        r.sendall(b"CLIENT LIST\r\n")
                        listing = r.recv(65536)
                        if b"cmd=evalsha" not in listing:
                            return
                        assert time.monotonic() < deadline, listing
                        time.sleep(0.1)

                closed_idle_connections()
                with hub.subscribe("idle", last_event_id=first.text) as sub:
                    assert sub.status == 200, sub.body
                    assert sub.headers["last-event-id"] == first.text
                    closed_idle_connections()
                    second = hub.publish("idle", "2")
                    assert second.status_code == 200, second.text
                    assert [e.id for e in sub.events(1)] == [second.text]
        finally:
            hub.stop()


def test_a_live_gap_notice_names_no_event_the_subscriber_may_not_see() -> None:
    """The first event after a gap may be another topic's, private: a subscriber that may
    not see it hears of the gap without its id."""
    with own_redis() as port:
        hub = start_hub(*FLAGS, "--store", f"redis://127.0.0.1:{port}/0?prefix=amnesia")
        try:
            with hub.subscribe("a") as sub:
                before = hub.publish("a", "n").text
                assert [e.id for e in sub.events(1)] == [before]
                with socket.create_connection(("127.0.0.1", port)) as r:
                    r.sendall(b"FLUSHALL\r\n")
                    assert r.recv(16).startswith(b"+OK")
                secret = hub.publish("secret", "s", id="secret-update", private="on")
                assert secret.status_code == 200
                after = hub.publish("a", "after").text
                gap, event = sub.events(2)
                assert gap.event == GAP_EVENT
                assert json.loads(gap.data)["replayFrom"] is None
                assert event.id == after
        finally:
            hub.stop()


def test_redis_back_without_its_data_is_a_gap_not_silence() -> None:
    with own_redis() as port:
        hub = start_hub(*FLAGS, "--store", f"redis://127.0.0.1:{port}/0?prefix=amnesia")
        try:
            with hub.subscribe("a") as sub:
                before = [hub.publish("a", f"n{i}").text for i in range(3)]
                assert [e.id for e in sub.events(3)] == before
                # Redis comes back empty (no persistence, or a failover to a replica that had
                # not caught up): what it held, and what no node had read yet, is gone.
                with socket.create_connection(("127.0.0.1", port)) as r:
                    r.sendall(b"FLUSHALL\r\n")
                    assert r.recv(16).startswith(b"+OK")
                after = hub.publish("a", "after").text
                gap, event = sub.events(2)
                assert gap.event == GAP_EVENT
                notice = json.loads(gap.data)
                assert notice["replayFrom"] == after
                assert notice["missed"] is None  # how many, nobody can know
                assert event.id == after
        finally:
            hub.stop()


def test_a_publish_whose_connection_cannot_even_open_during_a_stall_is_not_stored() -> None:
    """A timeout while a new connection says hello (before the script is sent) is 503, not
    stored: the publisher knows it may publish again, even without an id."""
    with own_redis("--enable-debug-command", "yes") as port:
        hub = start_hub(*FLAGS, "--store", f"redis://127.0.0.1:{port}/0?prefix=hello")
        try:
            with hub.subscribe("hello") as sub, socket.create_connection(("127.0.0.1", port)) as r:
                warm = hub.publish("hello", "first").text
                assert [e.id for e in sub.events(1)] == [warm]
                # The hub's pooled connection goes, and Redis stalls before the new one opens.
                r.sendall(b"CLIENT KILL TYPE normal SKIPME yes\r\nDEBUG SLEEP 3\r\n")
                answer = hub.publish("hello", "never", id="hello-1")
                assert answer.status_code == 503, answer.text
                assert "not stored" in answer.text
                assert r.recv(64).endswith(b"+OK\r\n")
                marker = hub.publish("hello", "next").text
                assert [e.id for e in sub.events(1)] == [marker]  # hello-1 never came
        finally:
            hub.stop()
