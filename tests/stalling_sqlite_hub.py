"""``ssehub serve`` whose SQLite store waits as long as it takes for a lock another process
holds (instead of failing after 5 s): a test that holds the write lock stalls every commit
until it lets go, with no clock in between.

Run as ``python -m tests.stalling_sqlite_hub serve …`` (``start_hub(module=…)``).
"""

from __future__ import annotations

from ssehub.backends.sqlite import SQLiteBackend
from ssehub.cli import main


def wait_for_locks() -> None:
    opened = SQLiteBackend._open

    def _open(self: SQLiteBackend) -> int:
        position = opened(self)
        assert self._db is not None
        self._db.execute("PRAGMA busy_timeout = 600000")
        return position

    SQLiteBackend._open = _open  # type: ignore[method-assign]


if __name__ == "__main__":
    wait_for_locks()
    main()
