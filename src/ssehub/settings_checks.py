"""Checks of single setting values, each raising ``InvalidSetting`` with the field at
fault and a reason a person can act on; ``Settings`` composes them with the rules that
relate several fields."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from jwt.algorithms import get_default_algorithms

_STORES = "memory, sqlite:PATH or redis://HOST:PORT/DB"


class InvalidSetting(ValueError):
    """A value the hub can never run with; ``name`` is the Settings field at fault.

    The CLI shows it as a usage error on ``--name`` (exit 2); the environment reader and the
    ASGI face raise it as it is."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def check_number(name: str, value: float) -> None:
    """A number must be finite and not negative."""
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidSetting(name, f"must be a finite number, got {value}")
    if value < 0:
        raise InvalidSetting(name, f"must be >= 0, got {value}")


def check_store(store: str) -> None:
    """A ``--store`` value the hub knows how to open."""
    if store == "memory":
        return
    if store.startswith("sqlite:"):
        if not store.removeprefix("sqlite:").removeprefix("//"):
            raise InvalidSetting("store", "sqlite store needs a path: sqlite:/var/lib/ssehub.db")
        return
    if store.startswith(("redis://", "rediss://", "unix://")):
        try:
            parts = urlsplit(store)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise InvalidSetting("store", f"{store!r} is not a Redis URL: {exc}") from None
        if store.startswith("unix://") and not parts.path:
            raise InvalidSetting("store", f"{store!r} names no socket path")
        return
    raise InvalidSetting("store", f"unknown store {store!r}: use {_STORES}")


def check_algorithms(jwt_algorithm: str) -> None:
    """A comma-separated list of signing algorithms PyJWT knows, never ``none``."""
    algorithms = [a.strip() for a in jwt_algorithm.split(",") if a.strip()]
    if not algorithms:
        raise InvalidSetting("jwt_algorithm", "names no algorithm")
    known = set(get_default_algorithms()) - {"none"}
    for algorithm in algorithms:
        if algorithm.lower() == "none":
            raise InvalidSetting("jwt_algorithm", "'none' would accept unsigned tokens")
        if algorithm not in known:
            raise InvalidSetting(
                "jwt_algorithm", f"unknown algorithm {algorithm!r}: use {', '.join(sorted(known))}"
            )


def check_url(name: str, url: str) -> None:
    """An absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidSetting(name, f"{url!r} is not an absolute http(s) URL")


def check_origins(name: str, origins: Iterable[str]) -> None:
    """Origins a browser's Origin header could equal (or ``*``)."""
    for origin in origins:
        problem = _origin_problem(origin)
        if problem:
            raise InvalidSetting(name, f"{origin!r} {problem}")


def _origin_problem(origin: str) -> str | None:
    """Why ``origin`` could never equal a browser's Origin header (scheme://host[:port])."""
    if origin == "*":
        return None
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "is not an origin: write scheme://host[:port], e.g. https://example.com"
    if parts.path or parts.query or parts.fragment:
        return "has a path: an origin is only scheme://host[:port], e.g. https://example.com"
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "has a port that is not a number"
    return None
