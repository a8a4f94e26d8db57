from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import HubProcess, start_hub


@pytest.fixture(scope="module")
def hub() -> Iterator[HubProcess]:
    """One hub per test module: anonymous subscribers allowed, no demo clock."""
    h = start_hub("--anonymous", "--no-demo", "--heartbeat", "0")
    yield h
    h.stop()


@pytest.fixture
def fresh_hub() -> Iterator[HubProcess]:
    """A hub of one's own, for tests that depend on history contents."""
    h = start_hub("--anonymous", "--no-demo", "--heartbeat", "0", "--history-size", "5")
    yield h
    h.stop()
