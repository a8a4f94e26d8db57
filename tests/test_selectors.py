"""Topic selectors: Mercure's matching rules and RFC 6570 templates, with bounded caches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ssehub.topics import TopicMatcher, is_template

BOOKS = "https://example.com/books/{id}"


@pytest.mark.parametrize(
    ("selector", "topic", "matches"),
    [
        ("*", "https://example.com/anything", True),
        ("https://example.com/a", "https://example.com/a", True),
        ("https://example.com/a", "https://example.com/b", False),
        (BOOKS, "https://example.com/books/1", True),
        (BOOKS, "https://example.com/books/1%2F2", True),
        (BOOKS, "https://example.com/books/1/2", False),
        (BOOKS, "https://example.com/authors/1", False),
        (BOOKS, BOOKS, True),  # a template matches itself (rule 2)
        (BOOKS, "https://example.com/books/{isbn}", False),
        (
            "https://example.com/users/foo/{?topic}",
            "https://example.com/users/foo/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1",
            True,
        ),
        ("https://example.com/{+path}", "https://example.com/a/b/c?d=e", True),
        ("https://example.com/{path}", "https://example.com/a/b", False),
        ("/books/{id}{.format}", "/books/1.json", True),
        ("/books/{id}{.format}", "/books/1", True),
        ("/x{/segments*}", "/x/a/b/c", True),
        ("/x{/segments*}/end", "/x/a/b/end", True),
        ("/m{;a,b}", "/m;a=1;b=2", True),
        ("/q{?a,b}{&c}", "/q?a=1&b=2&c=3", True),
        ("/f{#frag}", "/f#sec/tion", True),
        ("/p/{id:3}", "/p/abc", True),
        ("https://example.com/a.b?x=(1)/{id}", "https://example.com/a.b?x=(1)/3", True),
        ("https://example.com/a.b?x=(1)/{id}", "https://example.com/aXb?x=(1)/3", False),
        ("urn:ex:{id}", "urn:ex:été", True),  # IRIs: non-ASCII in values
        # Not valid templates: only equality counts.
        ("{", "{", True),
        ("{", "x", False),
        ("}{", "}{", True),
        ("a{}", "a", False),
        ("{a b}", "x", False),
        ("{=a}", "x", False),
        ("{a", "ax", False),
    ],
)
def test_match(selector: str, topic: str, matches: bool) -> None:
    assert TopicMatcher().match(selector, topic) is matches


@pytest.mark.parametrize(
    ("selector", "valid"),
    [
        (BOOKS, True),
        ("*", False),
        ("plain", False),
        ("{", False),
        ("{}", False),
        ("{a}{b}", True),
        ("{a.b,c:12,d*}", True),
        ("{a:0}", False),
        ("{a:12345}", False),
    ],
)
def test_is_template(selector: str, valid: bool) -> None:
    assert is_template(selector) is valid


def test_adjacent_expressions_stay_linear() -> None:
    # A backtracking regex takes exponential time on this; the position-set matcher does not.
    matcher = TopicMatcher()
    assert not matcher.match("{/a*}{/b*}{/c*}{/d*}{/e*}x", "/a" * 2500)
    assert matcher.match("{/a*}{/b*}{/c*}{/d*}{/e*}x", "/a" * 2500 + "x")


def test_caches_are_bounded() -> None:
    matcher = TopicMatcher(max_cached=1000, max_selectors=100)
    for i in range(50_000):
        assert matcher.match(BOOKS, f"https://example.com/books/{i}")
    assert matcher.cache_size() <= 1000
    for i in range(500):
        assert not matcher.match(f"https://example.com/{{x}}/{i}", "y")
    assert len(matcher._templates) <= 100


def test_match_any() -> None:
    matcher = TopicMatcher()
    assert matcher.match_any(["a", BOOKS], ["z", "https://example.com/books/9"])
    assert not matcher.match_any(["a", BOOKS], ["z"])
    assert not matcher.match_any([], ["z"])


@given(st.text())
def test_star_and_self_always_match(s: str) -> None:
    matcher = TopicMatcher()
    assert matcher.match("*", s)
    assert matcher.match(s, s)


@given(st.text().filter(lambda s: "{" not in s and "}" not in s and s != "*"), st.text())
def test_without_braces_only_equality_counts(selector: str, topic: str) -> None:
    assert TopicMatcher().match(selector, topic) is (selector == topic)
