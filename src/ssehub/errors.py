"""One error type that carries the HTTP answer: status, a one-line reason, extra headers."""

from __future__ import annotations

import re
from http import HTTPStatus

# Control characters (but tab): none may reach a response head, where CR or LF would end
# the header and let whatever follows pose as another one.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]+")
_MAX_REASON = 500


def one_line(text: str, limit: int = _MAX_REASON) -> str:
    """``text`` as one line of at most ``limit`` characters, without control characters."""
    line = " ".join(_CONTROL.sub(" ", text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def field_value(value: str) -> str:
    """A response header value: control characters, CR and LF above all, become spaces."""
    if value.isprintable():  # no control character is printable: the common case, cheaply
        return value
    return _CONTROL.sub(" ", value)


class HubError(Exception):
    """A request the hub refuses; the server turns it into a response in one place.

    ``reason`` is a single line a person can act on; it becomes the response body.
    """

    __slots__ = ("headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = one_line(reason)  # one line, bounded, safe in a header
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


class HubClientError(Exception):
    """The hub did not accept a request. ``status`` is ``None`` when no answer came."""

    status: int | None

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(reason if status is None else f"{status}: {reason}")
        self.status = status
        self.reason = reason


class HubRefused(HubClientError):
    """The hub answered with a 4xx: retrying the same request would not help."""

    status: int

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)


class HubUnavailable(HubClientError):
    """The hub answered 5xx, or could not be reached, on every attempt."""
