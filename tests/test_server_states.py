"""The connection states of the standalone server: every allowed move, and no other."""

from __future__ import annotations

import pytest

from ssehub.server.states import State, advance

ALLOWED = {
    (State.REQUESTS, State.OPENING),
    (State.REQUESTS, State.DRAINING),
    (State.REQUESTS, State.CLOSING),
    (State.OPENING, State.STREAMING),
    (State.OPENING, State.CLOSING),
    (State.STREAMING, State.CLOSING),
    (State.DRAINING, State.CLOSING),
}


@pytest.mark.parametrize("current", list(State))
@pytest.mark.parametrize("to", list(State))
def test_moves(current: State, to: State) -> None:
    if (current, to) in ALLOWED or to is State.CLOSED or to is current:
        assert advance(current, to) is to
    else:
        with pytest.raises(RuntimeError, match=f"from {current.value} to {to.value}"):
            advance(current, to)


def test_a_stream_never_goes_back_to_requests() -> None:
    state = State.REQUESTS
    for step in (State.OPENING, State.STREAMING, State.CLOSING, State.CLOSED):
        state = advance(state, step)
    for earlier in (State.REQUESTS, State.OPENING, State.STREAMING):
        with pytest.raises(RuntimeError):
            advance(State.CLOSED, earlier)
