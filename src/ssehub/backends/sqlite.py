"""Durable history on one node: SQLite in WAL mode, one transaction per publish batch."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..contract import EARLIEST, Replay, Sink, new_event_id
from ..events import Event, StoredEvent

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    topics TEXT NOT NULL,
    data TEXT NOT NULL,
    private INTEGER NOT NULL,
    type TEXT,
    retry INTEGER,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_id ON events (id, position);
CREATE INDEX IF NOT EXISTS events_by_time ON events (time);
"""
_COLUMNS = "position, id, topics, data, private, type, retry, time"
Row = tuple[int, str, str, str, int, str | None, int | None, float]


def _stored(row: Row) -> StoredEvent:
    position, id, topics, data, private, type_, retry, at = row
    event = Event(tuple(json.loads(topics)), data, bool(private), id, type_, retry)
    return StoredEvent.accept(event, id, position, at)


class SQLiteBackend:
    """Every batch is one transaction with ``synchronous=FULL``: a publisher's answer means
    its event is on disk. SQLite calls run on one thread of their own, off the event loop."""

    def __init__(self, path: str, history_size: int = 10_000, history_max_age: float = 0.0) -> None:
        if history_size < 0 or history_max_age < 0:
            raise ValueError("history bounds must be >= 0")
        self.path = path
        self.history_size = history_size
        self.history_max_age = history_max_age
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ssehub-sqlite")
        self._db: sqlite3.Connection | None = None
        self._sink: Sink | None = None
        self._last_id = EARLIEST

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def start(self, sink: Sink) -> int:
        self._sink = sink
        return await self._run(self._open)

    def _open(self) -> int:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        row = db.execute(
            "SELECT id, position FROM events ORDER BY position DESC LIMIT 1"
        ).fetchone()
        self._db = db
        if row is None:
            # AUTOINCREMENT never reuses a position, even after history was trimmed to nothing.
            seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            return int(seq[0]) if seq else 0
        self._last_id = row[0]
        return int(row[1])

    async def close(self) -> None:
        self._sink = None
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)
        self._executor.shutdown(wait=True)

    @property
    def last_id(self) -> str:
        return self._last_id

    async def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        stored = await self._run(lambda: self._insert(events))
        if stored:
            self._last_id = stored[-1].id
        if self._sink is not None:
            self._sink(stored)
        return stored

    def _insert(self, events: Sequence[Event]) -> list[StoredEvent]:
        db = self._db
        if db is None:
            raise ConnectionError("the SQLite store is closed")
        now = time.time()
        stored = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                event_id = event.id or new_event_id()
                cursor = db.execute(
                    "INSERT INTO events (id, topics, data, private, type, retry, time)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        event_id,
                        json.dumps(event.topics),
                        event.data,
                        int(event.private),
                        event.type,
                        event.retry,
                        now,
                    ),
                )
                assert cursor.lastrowid is not None
                stored.append(StoredEvent.accept(event, event_id, cursor.lastrowid, now))
            self._trim(db, now, stored[-1].position if stored else 0)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return stored

    def _trim(self, db: sqlite3.Connection, now: float, last: int) -> None:
        db.execute("DELETE FROM events WHERE position <= ?", (last - self.history_size,))
        if self.history_max_age:
            db.execute("DELETE FROM events WHERE time < ?", (now - self.history_max_age,))

    async def since(self, last_id: str, upto: int) -> Replay:
        return await self._run(lambda: self._since(last_id, upto))

    def _since(self, last_id: str, upto: int) -> Replay:
        db = self._db
        if db is None:
            raise ConnectionError("the SQLite store is closed")
        oldest = time.time() - self.history_max_age if self.history_max_age else -1.0
        after, found = 0, True
        if last_id != EARLIEST:
            row = db.execute(
                "SELECT position FROM events WHERE id = ? AND time >= ?"
                " ORDER BY position DESC LIMIT 1",
                (last_id, oldest),
            ).fetchone()
            if row is None:
                found = False
            else:
                after = row[0]
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE position > ? AND position <= ? AND time >= ?"
            " ORDER BY position",
            (after, upto, oldest),
        ).fetchall()
        return Replay([_stored(r) for r in rows], found)
