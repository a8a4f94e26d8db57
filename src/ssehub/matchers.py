"""Mercure 1.0 (draft-08) topic matchers, sans-I/O: typed ``exact`` (byte for byte) or
``urlpattern`` (WHATWG URL Pattern), their bounds, and the selector strings the engine keeps
them as (a NUL-marked prefix where a 0.x reading would take them differently)."""

from __future__ import annotations

from collections.abc import Iterable

from urlpattern import URLPattern

from .errors import HubError
from .templates import is_template

ALL = "*"
EXACT = "exact"
URLPATTERN = "urlpattern"
MATCH_TYPES = (EXACT, URLPATTERN)
EXACT_MARK = "\x00exact\x00"
PATTERN_MARK = "\x00urlpattern\x00"
DEFAULT_BASE = "https://localhost/.well-known/mercure"


class Pattern:
    """A Mercure 1.0 URL pattern selector, compiled, for callers that keep their own."""

    __slots__ = ("_base", "_pattern", "selector")

    def __init__(self, selector: str, pattern: URLPattern, base: str) -> None:
        self.selector = selector
        self._pattern = pattern
        self._base = base

    def matches(self, topic: str) -> bool:
        """Whether the topic (resolved against the hub's URL if relative) matches."""
        try:
            return bool(self._pattern.test(topic, self._base))
        except ValueError:  # a topic that is no URL, even resolved against the hub's
            return False


def matcher_selector(match_type: str, match: str) -> str:
    """The engine's selector string for a Mercure 1.0 matcher (``*`` is every topic)."""
    if match == ALL:
        return ALL
    if match_type == URLPATTERN:
        return PATTERN_MARK + match
    if match_type != EXACT:
        raise ValueError(f"unknown match type {match_type!r}")
    # Plain when a 0.x reading would also compare it byte for byte.
    return EXACT_MARK + match if is_template(match) else match


def selector_matcher(selector: str) -> tuple[str, str]:
    """The ``(match_type, match)`` of a selector (0.x selectors read as ``exact``)."""
    if selector.startswith(PATTERN_MARK):
        return URLPATTERN, selector[len(PATTERN_MARK) :]
    return EXACT, selector.removeprefix(EXACT_MARK)


def compile_pattern(pattern: str, base: str = DEFAULT_BASE) -> URLPattern:
    """A URL pattern, relative ones resolved against the hub's URL; ValueError if invalid.

    The package compiles with Rust's ``regex`` crate, which matches in linear time, so a
    crafted pattern cannot backtrack; the length bound in ``check_matchers`` bounds the rest.
    """
    try:
        return URLPattern(pattern, base)
    except ValueError:
        return URLPattern(pattern)


def check_matchers(
    matchers: Iterable[tuple[str, str]], max_length: int, base: str = DEFAULT_BASE
) -> None:
    """Refuse (400) a URL pattern too long or invalid: each is tried on every new topic."""
    for match_type, match in matchers:
        if match_type != URLPATTERN or match == ALL:
            continue
        if len(match) > max_length:
            raise HubError(
                400, f"URL pattern too long: {len(match)} characters, at most {max_length}"
            )
        try:
            compile_pattern(match, base)
        except ValueError as exc:
            raise HubError(400, f"invalid URL pattern {match[:80]!r}: {exc}") from None
