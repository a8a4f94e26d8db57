"""The SQLite store when its disk fills up, over real sockets: a clear refusal, then recovery."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .limited_sqlite_hub import PAGES
from .support import start_hub


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
