"""Mercure topic selectors, sans-I/O.

Mercure 0.x (draft-07) selectors are ``*``, exact strings and RFC 6570 URI templates.
Mercure 1.0 (draft-08) matchers are typed: ``exact`` (byte-for-byte) or ``urlpattern``
(WHATWG URL Pattern). The engine keeps every selector a string: a 1.0 matcher that a 0.x
reading would take differently is marked with a NUL prefix, which no topic or 1.0 matcher
may hold (both refuse control characters), so one index and one cache serve both.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

from urlpattern import URLPattern

from .errors import HubError

ALL = "*"
EXACT = "exact"
URLPATTERN = "urlpattern"
MATCH_TYPES = (EXACT, URLPATTERN)
_EXACT_MARK = "\x00exact\x00"
_PATTERN_MARK = "\x00urlpattern\x00"
DEFAULT_BASE = "https://localhost/.well-known/mercure"

_MAX_TEMPLATE = 2048  # longer selectors are never parsed as templates (see check_selectors)
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
    repeat: int = 1  # adjacent expressions with the same operator, matched as one token


_Token = str | _Expression
_Compiled = tuple[_Token, ...] | URLPattern | str | None  # str: a marked exact matcher


def _parse(
    selector: str, limit: int = _MAX_TEMPLATE, stop: int | None = None
) -> tuple[_Token, ...] | None:
    """Literals and expressions of a valid template with at least one expression, else None.

    With ``stop``, parsing ends once more than ``stop`` expressions are read (the tokens so
    far are returned): counting a hostile selector costs no more than the bound it breaks.
    """
    if "{" not in selector or len(selector) > limit:
        return None
    tokens: list[_Token] = []
    count = 0
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
        prefix, allowed = _OPERATORS[op]
        last = tokens[-1] if tokens else None
        if isinstance(last, _Expression) and (last.prefix, last.allowed) == (prefix, allowed):
            tokens[-1] = _Expression(prefix, allowed, last.repeat + 1)
        else:
            tokens.append(_Expression(prefix, allowed))
        count += 1
        if stop is not None and count > stop:
            break
        pos = end + 1
    return tuple(tokens)


def expressions(selector: str, stop: int | None = None) -> int:
    """How many expressions a template holds (0 for ``*``, exact topics and non-templates);
    with ``stop``, counting ends past it.

    Matching costs about this many steps per topic; the hub bounds it per subscription.
    """
    tokens = _parse(selector, limit=len(selector), stop=stop)
    if tokens is None:
        return 0
    return sum(t.repeat for t in tokens if isinstance(t, _Expression))


def check_selectors(selectors: Iterable[str], max_length: int, max_expressions: int) -> int:
    """Refuse (400) a subscription whose templates would make routing costly for everyone;
    return its template expressions, all selectors together.

    Every template of every subscription is tried against each new topic, so one
    subscriber's template of hundreds of expressions slows every publish: bound the length
    of a template and the expressions of a whole subscription.
    """
    max_length = min(max_length, _MAX_TEMPLATE)  # longer ones would match only themselves
    total = 0
    for selector in selectors:
        count = expressions(selector, stop=max_expressions - total)
        if not count:
            continue
        if len(selector) > max_length:
            raise HubError(
                400,
                f"topic template too long: {len(selector)} characters, at most {max_length}",
            )
        total += count
        if total > max_expressions:
            raise HubError(
                400,
                f"too many template expressions: more than {max_expressions} in this "
                "subscription's topic selectors",
            )
    return total


class Template:
    """A parsed URI template selector, for callers that keep their own (the route index)."""

    __slots__ = ("_tokens", "selector")

    def __init__(self, selector: str, tokens: tuple[_Token, ...]) -> None:
        self.selector = selector
        self._tokens = tokens

    def matches(self, topic: str) -> bool:
        """Mercure's rule for a template: equal to it, or one of its expansions."""
        return topic == self.selector or _template_matches(self._tokens, topic)


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


def template(selector: str, base: str = DEFAULT_BASE) -> Template | Pattern | None:
    """``selector`` parsed, if it may match other topics than itself: a valid URI template
    with at least one expression, or a (valid) 1.0 URL pattern."""
    if selector.startswith(_EXACT_MARK):
        return None
    if selector.startswith(_PATTERN_MARK):
        try:
            return Pattern(selector, compile_pattern(selector[len(_PATTERN_MARK) :], base), base)
        except ValueError:
            return None
    tokens = _parse(selector)
    return None if tokens is None else Template(selector, tokens)


def is_template(selector: str) -> bool:
    """True if ``selector`` is a valid URI template with at least one expression."""
    return _parse(selector) is not None


def is_pattern(selector: str) -> bool:
    """True if ``selector`` may match other topics than itself (a template or URL pattern);
    ``*`` aside, everything else matches by equality and can be looked up."""
    if selector.startswith(_EXACT_MARK):
        return False
    return selector.startswith(_PATTERN_MARK) or is_template(selector)


def exact_topic(selector: str) -> str:
    """The one topic an exact selector (not ``*``, not a pattern) matches."""
    return selector.removeprefix(_EXACT_MARK)


def matcher_selector(match_type: str, match: str) -> str:
    """The engine's selector string for a Mercure 1.0 matcher (``*`` is every topic)."""
    if match == ALL:
        return ALL
    if match_type == URLPATTERN:
        return _PATTERN_MARK + match
    if match_type != EXACT:
        raise ValueError(f"unknown match type {match_type!r}")
    # Plain when a 0.x reading would also compare it byte for byte.
    return _EXACT_MARK + match if is_template(match) else match


def selector_matcher(selector: str) -> tuple[str, str]:
    """The ``(match_type, match)`` of a selector (0.x selectors read as ``exact``)."""
    if selector.startswith(_PATTERN_MARK):
        return URLPATTERN, selector[len(_PATTERN_MARK) :]
    return EXACT, selector.removeprefix(_EXACT_MARK)


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


# operator's characters -> str.translate table writing each ASCII character as "1" or "0"
_BITS = {
    allowed: {i: "1" if chr(i) in allowed else "0" for i in range(128)}
    for _, allowed in _OPERATORS.values()
}


def _mask(text: str, allowed: frozenset[str]) -> int:
    """Bit i is set when text[i] may appear in a value (non-ASCII counts: IRIs)."""
    if not text:
        return 0
    if text.isascii():
        return int(text.translate(_BITS[allowed])[::-1], 2)
    return int("".join("1" if c in allowed or c > "\x7f" else "0" for c in reversed(text)), 2)


def _positions(text: str, part: str) -> int:
    """Bit i is set when ``part`` occurs in ``text`` at i."""
    hits = 0
    at = text.find(part)
    while at >= 0:
        hits |= 1 << at
        at = text.find(part, at + 1)
    return hits


def _template_matches(tokens: tuple[_Token, ...], topic: str) -> bool:
    """Whether ``topic`` is an expansion of the template.

    Runs a set of positions through the tokens as a bitmask (bit i: "matched up to i"), so
    the cost is linear in tokens x length whatever the template; a backtracking regex can
    take exponential time on adjacent expressions, and selectors come from anyone. Masks
    are made once per operator, and a run of same-operator expressions stops as soon as
    the set of positions stops growing. No bit passes n: masks and hits end before it.
    """
    first, last = tokens[0], tokens[-1]
    if isinstance(first, str) and not topic.startswith(first):
        return False
    if isinstance(last, str) and not topic.endswith(last):
        return False
    n = len(topic)
    masks: dict[frozenset[str], int] = {}
    prefixes: dict[str, int] = {}
    reach = 1  # position 0
    for token in tokens:
        if isinstance(token, str):
            reach = (reach & _positions(topic, token)) << len(token)
        else:
            allowed = masks.get(token.allowed)
            if allowed is None:
                allowed = masks[token.allowed] = _mask(topic, token.allowed)
            at_prefix = 0
            if token.prefix:
                at_prefix = prefixes.get(token.prefix, -1)
                if at_prefix < 0:
                    at_prefix = prefixes[token.prefix] = _positions(topic, token.prefix)
            for _ in range(token.repeat):
                starts = (reach & at_prefix) << 1 if token.prefix else reach
                begin = starts & allowed
                # Adding the run starts to the mask carries through each run of allowed
                # characters: the XORs leave exactly the positions one or more characters on.
                after = (allowed + begin) ^ allowed ^ begin
                grown = reach | after  # an undefined variable expands to nothing
                if grown == reach:
                    break  # a fixed point: the rest of the run adds nothing either
                reach = grown
        if not reach:
            return False
    return bool(reach >> n & 1)


class TopicMatcher:
    """Answers "does this topic match this selector", with caches bounded by count and bytes.

    Cached keys keep their strings alive, and a topic may be as long as a publish body, so
    the caches count the characters of their keys too. Both evict first-in first-out: a hit
    costs one dict lookup and no reordering.
    """

    def __init__(
        self,
        max_cached: int = 10_000,
        max_selectors: int = 4096,
        max_chars: int = 4 << 20,
        base: str = DEFAULT_BASE,
    ) -> None:
        self.base = base  # the hub's URL: relative URL patterns and topics resolve against it
        self.max_cached = max_cached
        self.max_selectors = max_selectors
        self.max_chars = max_chars  # per cache
        self._results: dict[tuple[str, str], bool] = {}
        self._results_chars = 0
        self._templates: dict[str, _Compiled] = {}
        self._templates_chars = 0

    def _compile(self, selector: str) -> _Compiled:
        if selector.startswith(_PATTERN_MARK):
            try:
                return compile_pattern(selector[len(_PATTERN_MARK) :], self.base)
            except ValueError:
                return None  # refused at subscribe; one from a token matches nothing
        if selector.startswith(_EXACT_MARK):
            return selector[len(_EXACT_MARK) :]  # compared byte for byte
        return _parse(selector)

    def _run(self, compiled: _Compiled, topic: str) -> bool:
        if compiled is None:
            return False
        if isinstance(compiled, str):
            return compiled == topic
        if isinstance(compiled, tuple):
            return _template_matches(compiled, topic)
        try:
            return bool(compiled.test(topic, self.base))
        except ValueError:  # a topic that is no URL, even resolved against the hub's
            return False

    def _tokens(self, selector: str) -> _Compiled:
        templates = self._templates
        if selector in templates:
            return templates[selector]
        tokens = self._compile(selector)
        size = len(selector)
        if size <= self.max_chars:
            while templates and (
                len(templates) >= self.max_selectors
                or self._templates_chars + size > self.max_chars
            ):
                oldest = next(iter(templates))
                del templates[oldest]
                self._templates_chars -= len(oldest)
            templates[selector] = tokens
            self._templates_chars += size
        return tokens

    def test(self, selector: str, topic: str) -> bool:
        """Like ``match`` without caching the answer: for callers that cache their own."""
        if selector in (ALL, topic):
            return True
        return self._run(self._tokens(selector), topic)

    def match(self, selector: str, topic: str) -> bool:
        """Mercure's rule: ``*``, then equality, then URI template or URL pattern matching."""
        if selector in (ALL, topic):
            return True
        tokens = self._tokens(selector)
        if tokens is None:
            return False
        key = (selector, topic)
        results = self._results
        found = results.get(key)
        if found is None:
            found = self._run(tokens, topic)
            size = len(selector) + len(topic)
            if size <= self.max_chars:
                while results and (
                    len(results) >= self.max_cached or self._results_chars + size > self.max_chars
                ):
                    old_selector, old_topic = next(iter(results))
                    del results[old_selector, old_topic]
                    self._results_chars -= len(old_selector) + len(old_topic)
                results[key] = found
                self._results_chars += size
        return found

    def match_any(self, selectors: Iterable[str], topics: Iterable[str]) -> bool:
        """Whether any selector matches any topic."""
        topics = tuple(topics)
        return any(self.match(s, t) for s in selectors for t in topics)

    def cache_size(self) -> int:
        """How many results are cached (bounded by ``max_cached``)."""
        return len(self._results)

    def cached_chars(self) -> int:
        """Characters held by both caches' keys (each bounded by ``max_chars``)."""
        return self._results_chars + self._templates_chars
