"""One error type that carries the HTTP answer: status, a one-line reason, extra headers."""

from __future__ import annotations

from http import HTTPStatus


class HubError(Exception):
    """A request the hub refuses; the server turns it into a response in one place.

    ``reason`` is a single line a person can act on; it becomes the response body.
    """

    __slots__ = ("headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = " ".join(reason.split())  # always one line
        self.headers = headers

    @property
    def phrase(self) -> str:
        """The standard reason phrase for the status line."""
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Error"


class ConfigError(Exception):
    """The hub cannot start as configured: a store that will not open, a key it cannot read,
    an address it cannot listen on.

    Raised where the fault is found, its text is one line naming the setting, what is wrong
    and what to check; the CLI prints it and exits 1.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(" ".join(reason.split()))
