"""``ssehub serve`` whose SQLite store may grow to ``PAGES`` pages only: a full disk, without
root. SQLite's ``max_page_count`` makes writes fail with SQLITE_FULL exactly as a full disk does.

Run as ``python -m tests.limited_sqlite_hub serve …`` (``start_hub(module=…)``).
"""

from __future__ import annotations

from ssehub.backends.sqlite import SQLiteBackend
from ssehub.cli import main

PAGES = 40


def limit(pages: int) -> None:
    opened = SQLiteBackend._open

    def _open(self: SQLiteBackend) -> int:
        position = opened(self)
        assert self._db is not None
        self._db.execute(f"PRAGMA max_page_count = {pages}")
        return position

    SQLiteBackend._open = _open  # type: ignore[method-assign]


if __name__ == "__main__":
    limit(PAGES)
    main()
