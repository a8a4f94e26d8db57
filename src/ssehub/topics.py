"""Mercure topic selectors: ``*``, exact strings and RFC 6570 URI templates, sans-I/O."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

ALL = "*"

_MAX_TEMPLATE = 2048
_VARSPEC = re.compile(
    r"(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2})(?:\.?(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2}))*"
    r"(?::[1-9][0-9]{0,3}|\*)?"
)
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~%")
_RESERVED = frozenset(":/?#[]@!$&'()*+,;=")
# operator -> (prefix of a defined expansion, characters its values and separators may use)
_OPERATORS: dict[str, tuple[str, frozenset[str]]] = {
    "": ("", _UNRESERVED | {","}),
    "+": ("", _UNRESERVED | _RESERVED),
    "#": ("#", _UNRESERVED | _RESERVED),
    ".": (".", _UNRESERVED | {","}),
    "/": ("/", _UNRESERVED | {"/", ","}),
    ";": (";", _UNRESERVED | {";", "=", ","}),
    "?": ("?", _UNRESERVED | {"&", "=", ","}),
    "&": ("&", _UNRESERVED | {"&", "=", ","}),
}


@dataclass(frozen=True, slots=True)
class _Expression:
    prefix: str
    allowed: frozenset[str]


_Token = str | _Expression


def _parse(selector: str) -> tuple[_Token, ...] | None:
    """Literals and expressions of a valid template with at least one expression, else None."""
    if "{" not in selector or len(selector) > _MAX_TEMPLATE:
        return None
    tokens: list[_Token] = []
    pos = 0
    while pos < len(selector):
        start = selector.find("{", pos)
        close = selector.find("}", pos)
        if start < 0:
            if close >= 0:
                return None
            tokens.append(selector[pos:])
            break
        if close < start:
            return None
        if start > pos:
            tokens.append(selector[pos:start])
        end = selector.find("}", start)
        if end < 0:
            return None
        body = selector[start + 1 : end]
        if "{" in body or not body:
            return None
        op = body[0] if body[0] in _OPERATORS and body[0] != "" else ""
        if body[0] in "=,!@|":  # reserved for future operators
            return None
        names = body[len(op) :].split(",")
        if not all(_VARSPEC.fullmatch(name) for name in names):
            return None
        tokens.append(_Expression(*_OPERATORS[op]))
        pos = end + 1
    return tuple(tokens)


def is_template(selector: str) -> bool:
    """True if ``selector`` is a valid URI template with at least one expression."""
    return _parse(selector) is not None


def _mask(text: str, allowed: frozenset[str]) -> int:
    """Bit i is set when text[i] may appear in a value (non-ASCII counts: IRIs)."""
    bits = "".join("1" if c in allowed or c > "\x7f" else "0" for c in reversed(text))
    return int(bits, 2) if bits else 0


def _template_matches(tokens: tuple[_Token, ...], topic: str) -> bool:
    """Whether ``topic`` is an expansion of the template.

    Runs a set of positions through the tokens as a bitmask (bit i: "matched up to i"), so
    the cost is linear in tokens x length whatever the template; a backtracking regex can
    take exponential time on adjacent expressions, and selectors come from anyone.
    """
    n = len(topic)
    reach = 1  # position 0
    for token in tokens:
        if isinstance(token, str):
            hits = 0
            at = topic.find(token)
            while at >= 0:
                hits |= 1 << at
                at = topic.find(token, at + 1)
            reach = (reach & hits) << len(token)
        else:
            starts = reach
            if token.prefix:
                at_prefix = 0
                at = topic.find(token.prefix)
                while at >= 0:
                    at_prefix |= 1 << at
                    at = topic.find(token.prefix, at + 1)
                starts = (reach & at_prefix) << 1
            allowed = _mask(topic, token.allowed)
            begin = starts & allowed
            # Adding the run starts to the mask carries through each run of allowed
            # characters: the XORs leave exactly the positions one or more characters on.
            after = (allowed + begin) ^ allowed ^ begin
            reach |= after  # an undefined variable expands to nothing
        reach &= (1 << (n + 1)) - 1
        if not reach:
            return False
    return bool(reach >> n & 1)


class TopicMatcher:
    """Answers "does this topic match this selector", with bounded caches.

    Both caches evict first-in first-out: a hit costs one dict lookup and no reordering.
    """

    def __init__(self, max_cached: int = 10_000, max_selectors: int = 4096) -> None:
        self.max_cached = max_cached
        self.max_selectors = max_selectors
        self._results: dict[tuple[str, str], bool] = {}
        self._templates: dict[str, tuple[_Token, ...] | None] = {}

    def match(self, selector: str, topic: str) -> bool:
        """Mercure's rule: ``*``, then equality, then URI template matching."""
        if selector in (ALL, topic):
            return True
        templates = self._templates
        if selector in templates:
            tokens = templates[selector]
        else:
            if len(templates) >= self.max_selectors:
                del templates[next(iter(templates))]
            tokens = templates[selector] = _parse(selector)
        if tokens is None:
            return False
        key = (selector, topic)
        results = self._results
        found = results.get(key)
        if found is None:
            if len(results) >= self.max_cached:
                del results[next(iter(results))]
            found = results[key] = _template_matches(tokens, topic)
        return found

    def match_any(self, selectors: Iterable[str], topics: Iterable[str]) -> bool:
        """Whether any selector matches any topic."""
        topics = tuple(topics)
        return any(self.match(s, t) for s in selectors for t in topics)

    def cache_size(self) -> int:
        """How many results are cached (bounded by ``max_cached``)."""
        return len(self._results)
