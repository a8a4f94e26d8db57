"""The states of one connection, and the moves between them, in one place (h11's habit).

::

    REQUESTS ──subscribe──▶ OPENING ──replayed──▶ STREAMING
       │  │                    │                      │
       │  └──shutdown──▶ DRAINING                     │
       ▼                       ▼                      ▼
    CLOSING (refused, last answer sent, stream ended) ──▶ CLOSED (connection_lost)

``REQUESTS``: reading requests and answering them in order (keep-alive, pipelining).
``OPENING``: a subscribe was accepted; history is being replayed (live bytes held).
``STREAMING``: live; the hub's fan-out writes to the transport, a full buffer drops it.
``DRAINING``: the hub is shutting down; in-flight answers go out, nothing more is read.
``CLOSING``: nothing more is read or started; the transport is closing.
``CLOSED``: the transport is gone.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    REQUESTS = "requests"
    OPENING = "opening"
    STREAMING = "streaming"
    DRAINING = "draining"
    CLOSING = "closing"
    CLOSED = "closed"


_MOVES: dict[State, frozenset[State]] = {
    State.REQUESTS: frozenset({State.OPENING, State.DRAINING, State.CLOSING}),
    State.OPENING: frozenset({State.STREAMING, State.CLOSING}),
    State.STREAMING: frozenset({State.CLOSING}),
    State.DRAINING: frozenset({State.CLOSING}),
    State.CLOSING: frozenset(),
    State.CLOSED: frozenset(),
}


def advance(current: State, to: State) -> State:
    """``to``, if a connection in ``current`` may move there (``CLOSED`` always may)."""
    if to is State.CLOSED or to is current or to in _MOVES[current]:
        return to
    raise RuntimeError(f"a connection cannot go from {current.value} to {to.value}")
