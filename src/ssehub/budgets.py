"""A shared cost bounded per owner: what one party's subscriptions may cost everyone.

The owner is opaque to the engine (a face keys it by client address); so is the unit (the
template expressions every new topic is tried against)."""

from __future__ import annotations

from collections.abc import Hashable


class Budget:
    """Cost in use per owner, at most ``limit`` each (0: no limit). Owners at zero are
    forgotten, so the record is bounded by the owners holding something."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used: dict[Hashable, int] = {}

    def used(self, owner: Hashable) -> int:
        return self._used.get(owner, 0)

    def fits(self, owner: Hashable, cost: int) -> bool:
        """Whether ``owner`` may take ``cost`` more."""
        return not self.limit or self._used.get(owner, 0) + cost <= self.limit

    def take(self, owner: Hashable, cost: int) -> None:
        if cost:
            self._used[owner] = self._used.get(owner, 0) + cost

    def give(self, owner: Hashable, cost: int) -> None:
        """Return what ``take`` took (once)."""
        left = self._used.pop(owner, 0) - cost
        if left > 0:
            self._used[owner] = left
