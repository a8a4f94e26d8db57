"""Mercure topic selectors, sans-I/O.

Mercure 0.x (draft-07) selectors are ``*``, exact strings and RFC 6570 URI templates.
Mercure 1.0 (draft-08) matchers are typed: ``exact`` (byte-for-byte) or ``urlpattern``
(WHATWG URL Pattern). The engine keeps every selector a string: a 1.0 matcher that a 0.x
reading would take differently is marked with a NUL prefix, which no topic or 1.0 matcher
may hold (both refuse control characters), so one index and one cache serve both.

The parts: ``templates`` (0.x URI templates: parsing, bounds, the matcher), ``matchers``
(1.0 matchers: URL patterns, their bounds, the marks); this module the selector as the
engine sees it, and ``TopicMatcher``, the cached answer to "does it match".
"""

from __future__ import annotations

from collections.abc import Iterable

from urlpattern import URLPattern

from .matchers import (
    ALL,
    DEFAULT_BASE,
    EXACT,
    EXACT_MARK,
    MATCH_TYPES,
    PATTERN_MARK,
    URLPATTERN,
    Pattern,
    check_matchers,
    compile_pattern,
    matcher_selector,
    selector_matcher,
)
from .templates import (
    Template,
    Token,
    check_selectors,
    expressions,
    is_template,
    parse,
    template_matches,
)

__all__ = [
    "ALL",
    "DEFAULT_BASE",
    "EXACT",
    "MATCH_TYPES",
    "URLPATTERN",
    "Pattern",
    "Template",
    "TopicMatcher",
    "check_matchers",
    "check_selectors",
    "compile_pattern",
    "exact_topic",
    "expressions",
    "is_pattern",
    "is_template",
    "matcher_selector",
    "selector_matcher",
    "template",
]

_Compiled = tuple[Token, ...] | URLPattern | str | None  # str: a marked exact matcher


def template(selector: str, base: str = DEFAULT_BASE) -> Template | Pattern | None:
    """``selector`` parsed, if it may match other topics than itself: a valid URI template
    with at least one expression, or a (valid) 1.0 URL pattern."""
    if selector.startswith(EXACT_MARK):
        return None
    if selector.startswith(PATTERN_MARK):
        try:
            return Pattern(selector, compile_pattern(selector[len(PATTERN_MARK) :], base), base)
        except ValueError:
            return None
    tokens = parse(selector)
    return None if tokens is None else Template(selector, tokens)


def is_pattern(selector: str) -> bool:
    """True if ``selector`` may match other topics than itself (a template or URL pattern);
    ``*`` aside, everything else matches by equality and can be looked up."""
    if selector.startswith(EXACT_MARK):
        return False
    return selector.startswith(PATTERN_MARK) or is_template(selector)


def exact_topic(selector: str) -> str:
    """The one topic an exact selector (not ``*``, not a pattern) matches."""
    return selector.removeprefix(EXACT_MARK)


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
        if selector.startswith(PATTERN_MARK):
            try:
                return compile_pattern(selector[len(PATTERN_MARK) :], self.base)
            except ValueError:
                return None  # refused at subscribe; one from a token matches nothing
        if selector.startswith(EXACT_MARK):
            return selector[len(EXACT_MARK) :]  # compared byte for byte
        return parse(selector)

    def _run(self, compiled: _Compiled, topic: str) -> bool:
        if compiled is None:
            return False
        if isinstance(compiled, str):
            return compiled == topic
        if isinstance(compiled, tuple):
            return template_matches(compiled, topic)
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
