"""Durable history on one node: SQLite in WAL mode, one transaction per publish batch."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..contract import (
    EARLIEST,
    REPLAY_PAGE,
    Appended,
    Replay,
    Sink,
    broadcast_locally,
    new_event_id,
)
from ..errors import ConfigError
from ..events import Event, StoredEvent
from ..settings import DEFAULTS

T = TypeVar("T")
log = logging.getLogger("ssehub.sqlite")

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

    def __init__(
        self,
        path: str,
        history_size: int = DEFAULTS.history_size,
        history_max_age: float = DEFAULTS.history_max_age,
    ) -> None:
        if history_size < 0 or history_max_age < 0:
            raise ValueError("history bounds must be >= 0")
        self.path = path
        self.history_size = history_size
        self.history_max_age = history_max_age
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ssehub-sqlite")
        self._db: sqlite3.Connection | None = None
        self._sink: Sink | None = None
        self._last_id = EARLIEST
        self._position = 0  # of the newest stored event

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def start(self, sink: Sink) -> int:
        self._sink = sink
        self._position = await self._run(self._open)
        return self._position

    def _open(self) -> int:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(_SCHEMA)
                row = db.execute(
                    "SELECT id, position FROM events ORDER BY position DESC LIMIT 1"
                ).fetchone()
            except BaseException:
                db.close()
                raise
        except sqlite3.Error as exc:
            raise ConfigError(f"--store sqlite:{self.path}: {_why_not(self.path, exc)}") from exc
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
        try:
            stored, new = await self._run(lambda: self._insert(events))
        except sqlite3.Error as exc:
            raise self._refusal(exc) from exc
        if new:
            self._last_id = new[-1].id
            self._position = new[-1].position
            if self._sink is not None:
                self._sink(new)
        return Appended(stored, len(stored) - len(new))

    async def broadcast(self, events: Sequence[Event]) -> list[StoredEvent]:
        return broadcast_locally(self._sink, events, self._position)

    def _insert(self, events: Sequence[Event]) -> tuple[list[StoredEvent], list[StoredEvent]]:
        """Store a batch in one transaction: every event's entry, and those that are new
        (the others are retries of an id history holds)."""
        db = self._db
        if db is None:
            raise ConnectionError("the SQLite store is closed")
        now = time.time()
        oldest = now - self.history_max_age if self.history_max_age else -1.0
        stored: list[StoredEvent] = []
        new: list[StoredEvent] = []
        batch: dict[str, StoredEvent] = {}
        db.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                if event.id is not None:
                    known = batch.get(event.id) or self._stored_by_id(db, event.id, oldest)
                    if known is not None:  # a publisher's retry: the event it already has
                        stored.append(known)
                        continue
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
                accepted = StoredEvent.accept(event, event_id, cursor.lastrowid, now)
                stored.append(accepted)
                new.append(accepted)
                batch[event_id] = accepted
            self._trim(db, now, new[-1].position if new else 0)
            db.execute("COMMIT")
        except BaseException:
            # Some failures (a full disk) have rolled the transaction back already; a second
            # ROLLBACK would fail and hide why.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return stored, new

    def _refusal(self, exc: sqlite3.Error, doing: str = "write") -> OSError:
        """Why a write (or a read) failed, in words an operator can act on."""
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code
        reason = {
            sqlite3.SQLITE_FULL: "disk full: the SQLite store cannot grow",
            sqlite3.SQLITE_READONLY: "the SQLite store is read-only",
            sqlite3.SQLITE_IOERR: f"I/O error on the SQLite store ({doing})",
            sqlite3.SQLITE_BUSY: "the SQLite store is locked by another process",
            sqlite3.SQLITE_CANTOPEN: "the SQLite store cannot be opened",
            sqlite3.SQLITE_CORRUPT: "the SQLite store is corrupt",
        }.get(code, f"the SQLite store refused the {doing}")
        log.error("%s: %s (%s)", self.path, reason, exc)
        return OSError(reason)  # publishers hear why, not where

    @staticmethod
    def _stored_by_id(db: sqlite3.Connection, event_id: str, oldest: float) -> StoredEvent | None:
        row = db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE id = ? AND time >= ?"
            " ORDER BY position DESC LIMIT 1",
            (event_id, oldest),
        ).fetchone()
        return None if row is None else _stored(row)

    def _trim(self, db: sqlite3.Connection, now: float, last: int) -> None:
        db.execute("DELETE FROM events WHERE position <= ?", (last - self.history_size,))
        if self.history_max_age:
            db.execute("DELETE FROM events WHERE time < ?", (now - self.history_max_age,))

    async def since(self, after: str | int, upto: int, limit: int = REPLAY_PAGE) -> Replay:
        try:
            return await self._run(lambda: self._since(after, upto, limit))
        except sqlite3.Error as exc:  # the hub answers 503 with this, rather than hang
            raise self._refusal(exc, "read") from exc

    def _since(self, after: str | int, upto: int, limit: int) -> Replay:
        db = self._db
        if db is None:
            raise ConnectionError("the SQLite store is closed")
        oldest = time.time() - self.history_max_age if self.history_max_age else -1.0
        start, found = 0, True
        if isinstance(after, int):
            start = after
        elif after != EARLIEST:
            row = db.execute(
                "SELECT position FROM events WHERE id = ? AND time >= ?"
                " ORDER BY position DESC LIMIT 1",
                (after, oldest),
            ).fetchone()
            if row is None:
                found = False
            else:
                start = row[0]
        # Rows are read one by one and the page stops at its bound: a long history is never
        # loaded whole.
        cursor = db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE position > ? AND position <= ? AND time >= ?"
            " ORDER BY position",
            (start, upto, oldest),
        )
        events: list[StoredEvent] = []
        size, more = 0, False
        for row in cursor:
            if size >= limit and events:
                more = True
                break
            events.append(_stored(row))
            size += len(events[-1].wire)
        cursor.close()
        if isinstance(after, int) and after < upto:
            # A continuation lost nothing if its anchor is still held, or if what follows it
            # is its immediate successor (positions are consecutive: AUTOINCREMENT, and a
            # rolled-back batch rolls its sequence back too).
            following = events[0].position if events else None
            if following != after + 1:
                held = db.execute(
                    "SELECT 1 FROM events WHERE position = ? AND time >= ?", (after, oldest)
                ).fetchone()
                found = held is not None
        return Replay(events, found, more)


def _why_not(path: str, exc: sqlite3.Error) -> str:
    """Why SQLite could not open ``path``, in terms a person can fix.

    SQLite reports only "unable to open database file"; opening the file ourselves gives the
    operating system's reason (missing directory, permission, read-only file system)."""
    folder = os.path.dirname(os.path.abspath(path))
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_NOTADB:
        return f"{path} is not a SQLite database (another program's file? give a new path)"
    existed = os.path.exists(path)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as os_exc:
        return _os_reason(path, folder, os_exc)
    if not existed:
        os.unlink(path)  # only a probe: leave things as they were
    if code == sqlite3.SQLITE_READONLY or "readonly" in str(exc):
        return (
            f"the database is read-only: SQLite also writes {path}-wal and {path}-shm beside it,"
            f" so {folder} must be writable too"
        )
    if os.path.exists(path + "-wal") and not os.access(path + "-wal", os.W_OK):
        return f"{path}-wal is not writable by this user"
    return f"cannot open {path}: {exc}"


def _os_reason(path: str, folder: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return f"the directory {folder} does not exist (create it, or fix the path)"
    if exc.errno == errno.EISDIR:
        return f"{path} is a directory: give a file path, e.g. {os.path.join(path, 'ssehub.db')}"
    if exc.errno == errno.EROFS:
        return f"{folder} is on a read-only file system: put the database on a writable one"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied opening {path} for writing: check the owner and mode of the file"
            f" and of {folder} (the hub runs as uid {os.getuid()})"
        )
    return f"cannot open {path}: {exc.strerror or exc}"
