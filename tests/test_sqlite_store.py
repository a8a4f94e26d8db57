"""The SQLite store when its disk fills up, over real sockets: a clear refusal, then recovery."""

from __future__ import annotations

import re
import selectors
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlencode

from .limited_sqlite_hub import PAGES
from .support import DEADLINE, start_hub


def test_full_disk_says_so_and_writes_resume_once_space_returns(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    hub = start_hub(
        "--anonymous",
        "--no-demo",
        "--heartbeat",
        "0",
        "--store",
        f"sqlite:{db}",
        "--history-size",
        "100000",
        module="tests.limited_sqlite_hub",
    )
    try:
        accepted = []
        for i in range(PAGES * 4):  # 2 KiB events fill 4 KiB pages well before this
            answer = hub.publish("full", f"{i}" + "x" * 2048)
            if answer.status_code != 200:
                break
            accepted.append(answer.text)
        else:
            raise AssertionError(f"{len(accepted)} publishes and the store never filled up")
        assert accepted
        assert answer.status_code == 503
        assert "disk full" in answer.text, answer.text
        assert answer.headers["retry-after"] == "1"
        # Space comes back (here: an operator deletes old events); the next publish commits.
        with sqlite3.connect(db) as other:
            other.execute("DELETE FROM events WHERE position <= ?", (len(accepted) // 2,))
        with hub.subscribe("full") as sub:
            again = hub.publish("full", "after")
            assert again.status_code == 200, again.text
            assert [e.id for e in sub.events(1)] == [again.text]
    finally:
        hub.stop()


def test_a_replay_the_store_cannot_read_is_answered_503(tmp_path: Path) -> None:
    """A SQLite error while reading history once escaped the hub (neither ConnectionError nor
    OSError): the subscriber got no answer at all and hung."""
    db = tmp_path / "events.db"
    hub = start_hub("--anonymous", "--no-demo", "--heartbeat", "0", "--store", f"sqlite:{db}")
    try:
        first = hub.publish("broken", "e0").text
        with sqlite3.connect(db) as other:  # the table the hub reads is gone
            other.execute("ALTER TABLE events RENAME TO moved")
        with hub.subscribe("broken", last_event_id=first) as sub:
            assert sub.status == 503
            assert b"history is unavailable: the SQLite store refused the read" in sub.body
        with hub.subscribe("broken") as live:  # without history, streams still open
            assert live.status == 200
    finally:
        hub.stop()


def _publish_request(token: str, data: str) -> bytes:
    body = urlencode({"topic": "stalled", "data": data}).encode()
    return (
        b"POST /.well-known/mercure HTTP/1.1\r\nHost: hub\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _answer(conn: socket.socket) -> bytes:
    """One whole response (these carry a Content-Length), read within the deadline."""
    conn.settimeout(DEADLINE)
    raw = b""
    while True:
        head, end, body = raw.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if end and length is not None and len(body) >= int(length.group(1)):
            return raw
        chunk = conn.recv(65536)
        assert chunk, f"closed after {raw!r}"
        raw += chunk


def test_publishes_waiting_for_a_stalled_store_are_bounded(tmp_path: Path) -> None:
    """While a commit waits on the store, what queues behind it is bounded: past
    --max-pending-bytes a publish is answered 503 hub busy at once (Retry-After), and the
    ones accepted are stored once the store moves again."""
    db = tmp_path / "events.db"
    hub = start_hub(
        *("--anonymous", "--no-demo", "--heartbeat", "0", "--store", f"sqlite:{db}"),
        *("--max-pending-bytes", "50000"),
        module="tests.stalling_sqlite_hub",
    )
    lock = sqlite3.connect(db, isolation_level=None)
    conns: list[socket.socket] = []
    try:
        lock.execute("BEGIN IMMEDIATE")  # the store's write lock, held by this test
        data = "x" * 10_000  # about 10 KiB each: four fit in 50 000 bytes, a fifth does not
        for _ in range(5):
            conn = socket.create_connection(("127.0.0.1", hub.port))
            conn.sendall(_publish_request(hub.publisher_token, data))
            conns.append(conn)
        with selectors.DefaultSelector() as waiting:
            for conn in conns:
                waiting.register(conn, selectors.EVENT_READ)
            ready = waiting.select(DEADLINE)
        assert len(ready) == 1, "no publish was refused while the store stalled"
        refused = ready[0][0].fileobj
        assert isinstance(refused, socket.socket)
        answer = _answer(refused)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"\r\nretry-after: 1\r\n" in answer.lower()
        assert b"hub busy" in answer
        lock.execute("ROLLBACK")
        accepted = [_answer(c) for c in conns if c is not refused]
        assert [a.split(b" ", 2)[1] for a in accepted] == [b"200"] * 4
        with hub.subscribe("stalled", last_event_id="earliest") as sub:
            assert len(sub.events(4)) == 4
        assert hub.metric("ssehub_updates_busy_total") == 1
    finally:
        for conn in conns:
            conn.close()
        lock.close()
        hub.stop()
