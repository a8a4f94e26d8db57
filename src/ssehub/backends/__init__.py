"""The backends (memory, SQLite, Redis) and the ``--store`` value that picks one.

The contract they keep is the engine's (``ssehub.contract``), re-exported here."""

from __future__ import annotations

from ..contract import (
    EARLIEST,
    REPLAY_PAGE,
    Backend,
    Gap,
    GapSink,
    OutcomeUnknown,
    Replay,
    ReportsGaps,
    Sink,
    new_event_id,
    transient,
)
from ..settings import DEFAULTS


def open_backend(
    store: str,
    history_size: int,
    history_max_age: float,
    history_max_bytes: int = DEFAULTS.history_max_bytes,
) -> Backend:
    """The backend a ``--store`` value names: ``memory``, ``sqlite:PATH`` or ``redis://…``."""
    if store == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(history_size, history_max_age, history_max_bytes)
    if store.startswith("sqlite:"):
        from .sqlite import SQLiteBackend

        path = store.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise ValueError("sqlite store needs a path: --store sqlite:/var/lib/ssehub.db")
        return SQLiteBackend(path, history_size, history_max_age)
    if store.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisBackend

        return RedisBackend(store, history_size, history_max_age)
    raise ValueError(f"unknown store {store!r}: use memory, sqlite:PATH or redis://HOST:PORT/DB")


__all__ = [
    "EARLIEST",
    "REPLAY_PAGE",
    "Backend",
    "Gap",
    "GapSink",
    "OutcomeUnknown",
    "Replay",
    "ReportsGaps",
    "Sink",
    "new_event_id",
    "open_backend",
    "transient",
]
