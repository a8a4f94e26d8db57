"""Mercure 1.0 (draft-08) sans-I/O: typed matchers, subscribe parsing, access tokens."""

from __future__ import annotations

import time

import jwt
import pytest

from ssehub.access_tokens import DETAIL_TYPE, DetailsError, grants, mint_access_token
from ssehub.auth import DIALECT_0, DIALECT_1, Authenticator
from ssehub.dialects import resources
from ssehub.errors import HubError
from ssehub.events import Event
from ssehub.mercure import check_publish_1, parse_publish, parse_subscribe, request_dialect
from ssehub.routes import RouteIndex
from ssehub.settings import Settings
from ssehub.tokens import Carrier, Token
from ssehub.topics import (
    TopicMatcher,
    check_matchers,
    is_pattern,
    matcher_selector,
    selector_matcher,
)

KEY = "unit-key-0123456789-0123456789-abcdef"
RESOURCE = "https://hub.example/.well-known/mercure"


@pytest.mark.parametrize(
    ("match_type", "match", "topic", "matches"),
    [
        ("exact", "https://e.com/a", "https://e.com/a", True),
        ("exact", "https://e.com/a", "https://e.com/A", False),
        # A 0.x reading would expand it; draft-08's exact matcher compares bytes.
        ("exact", "https://e.com/{id}", "https://e.com/1", False),
        ("exact", "https://e.com/{id}", "https://e.com/{id}", True),
        ("exact", "*", "anything at all", True),
        ("urlpattern", "https://e.com/books/:id", "https://e.com/books/1", True),
        ("urlpattern", "https://e.com/books/:id", "https://e.com/books/1/2", False),
        ("urlpattern", "https://e.com/books/:id", "https://e.com/authors/1", False),
        ("urlpattern", "https://e.com/users/42/*", "https://e.com/users/42/a/b", True),
        # Relative patterns and topics resolve against the hub's URL.
        (
            "urlpattern",
            "/.well-known/mercure/subscriptions/:t/:m/:s",
            "/.well-known/mercure/subscriptions/exact/a/b",
            True,
        ),
        ("urlpattern", "https://e.com/:x", "not a url", False),
        ("urlpattern", "*", "urn:anything", True),
    ],
)
def test_matchers(match_type: str, match: str, topic: str, matches: bool) -> None:
    selector = matcher_selector(match_type, match)
    assert TopicMatcher().match(selector, topic) is matches
    assert TopicMatcher().test(selector, topic) is matches
    if match != "*":
        assert selector_matcher(selector) == (match_type, match)


def test_plain_exact_matchers_stay_lookups() -> None:
    """An exact matcher a 0.x reading would also compare by equality keeps its plain string,
    so the route index finds it by one dict lookup; patterns are indexed as patterns."""
    assert matcher_selector("exact", "urn:a") == "urn:a"
    assert not is_pattern(matcher_selector("exact", "https://e.com/{id}"))
    assert is_pattern(matcher_selector("urlpattern", "https://e.com/:id"))


class _View:
    def __init__(self, *selectors: str) -> None:
        self.selectors = frozenset(selectors)


def test_route_index_routes_typed_matchers() -> None:
    index: RouteIndex[_View] = RouteIndex()
    pattern = _View(matcher_selector("urlpattern", "https://e.com/books/:id"))
    literal = _View(matcher_selector("exact", "https://e.com/shelf/{id}"))
    assert index.route(("https://e.com/books/1",)) == ()
    index.add(pattern)
    index.add(literal)
    assert index.route(("https://e.com/books/1",)) == (pattern,)
    assert index.route(("https://e.com/shelf/{id}",)) == (literal,)
    assert index.route(("https://e.com/shelf/1",)) == ()
    index.remove(literal)
    assert index.route(("https://e.com/shelf/{id}",)) == ()


def test_url_pattern_bounds_and_validity() -> None:
    check_matchers([("urlpattern", "https://e.com/:id"), ("exact", "x" * 5000)], 100)
    with pytest.raises(HubError, match="URL pattern too long") as info:
        check_matchers([("urlpattern", "https://e.com/" + "a" * 200)], 100)
    assert info.value.status == 400
    with pytest.raises(HubError, match="invalid URL pattern") as info:
        check_matchers([("urlpattern", "https://e.com/(")], 100)


def test_url_patterns_match_in_linear_time() -> None:
    """A pattern that backtracks exponentially in Python's re answers at once: the
    package's engine is Rust's regex crate, which guarantees linear-time matching."""
    selector = matcher_selector("urlpattern", "https://e.com/((a+)+)b")
    assert TopicMatcher().test(selector, "https://e.com/" + "a" * 5000 + "c") is False


def test_request_dialect() -> None:
    assert request_dialect("topic=a") == "0.x"
    assert request_dialect("match=a&last_event_id=x") == "1.0"
    assert request_dialect("match_urlpattern=a") == "1.0"
    assert request_dialect("lastEventID=x") is None
    with pytest.raises(HubError, match="mixed dialects"):
        request_dialect("topic=a&match=b")


def test_parse_subscribe_1() -> None:
    wanted = parse_subscribe(
        "match=urn:a&match_urlpattern=https://e.com/:x&match=urn:a&last_event_id=7", None, 10
    )
    assert wanted.dialect == "1.0"
    assert wanted.matchers == (("exact", "urn:a"), ("urlpattern", "https://e.com/:x"))
    assert wanted.topics == ("urn:a", matcher_selector("urlpattern", "https://e.com/:x"))
    assert wanted.last_event_id == "7"
    assert parse_subscribe("match=a&last_event_id=7", "9", 10).last_event_id == "9"


@pytest.mark.parametrize(
    ("query", "status", "reason", "error"),
    [
        ("match_regex=a", 400, "unknown matcher parameter", None),
        ("MATCH=a", 400, "unknown matcher parameter", None),
        ("match=", 400, "empty match", None),
        ("match=a%00b", 400, "control characters", None),
        ("match=a%C2%85", 400, "control characters", None),
        ("match=a&access_token=x", 400, "no token in the query string", "invalid_request"),
        ("match=a&authorization=x", 400, "no token in the query string", "invalid_request"),
        ("match=a&match=b&match=c", 400, "too many matchers", None),
        ("topic=%00urlpattern%00x", 400, "NUL", None),
    ],
)
def test_parse_subscribe_1_refusals(
    query: str, status: int, reason: str, error: str | None
) -> None:
    with pytest.raises(HubError) as info:
        parse_subscribe(query, None, 2)
    assert info.value.status == status
    assert reason in info.value.reason
    challenge = dict(info.value.headers).get("WWW-Authenticate", "")
    assert (f'error="{error}"' in challenge) if error else not challenge


def test_dialect_setting() -> None:
    with pytest.raises(HubError, match=r"Mercure 0\.x subscriptions are turned off"):
        parse_subscribe("topic=a", None, 10, ("1.0",))
    with pytest.raises(HubError, match=r"Mercure 1\.0 subscriptions are turned off"):
        parse_subscribe("match=a", None, 10, ("0.x",))
    with pytest.raises(HubError, match="missing match"):
        parse_subscribe("", None, 10, ("1.0",))
    assert parse_subscribe("topic=a", None, 10, ("0.x",)).dialect == "0.x"


def test_publish_rules_1() -> None:
    event = Event(("https://e.com/a",), "x")
    check_publish_1(event, RESOURCE)
    for topic in (
        "/.well-known/mercure",
        "/.well-known/mercure/subscriptions/exact/a/b",
        "https://elsewhere.example/.well-known/mercure/subscriptions/x",
    ):
        with pytest.raises(HubError) as info:
            check_publish_1(Event((topic,), "x"), RESOURCE)
        assert info.value.status == 403
    check_publish_1(Event(("/.well-known/mercure-not",), "x"), RESOURCE)
    with pytest.raises(HubError, match="control characters"):
        check_publish_1(Event(("a\x85b",), "x"), RESOURCE)
    with pytest.raises(HubError, match="control characters"):
        parse_publish(b"topic=a%00b&data=x", "application/x-www-form-urlencoded")


def test_grants() -> None:
    granted = grants(
        [
            {"type": "tenant", "topics": "acme", "actions": {"read": True}},  # not ours
            {"type": DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": "*"}]},
            {
                "type": "mercure",
                "actions": ["subscribe"],
                "topics": [
                    {"match": "urn:a"},
                    {"match": "https://e.com/:id", "match_type": "urlpattern"},
                ],
                "payload": {"user": "alice"},
            },
        ]
    )
    assert granted.publish == ("*",)
    assert granted.subscribe == ("urn:a", matcher_selector("urlpattern", "https://e.com/:id"))
    assert granted.payload == {"user": "alice"}
    assert grants(None).publish == ()


@pytest.mark.parametrize(
    "details",
    [
        {"type": DETAIL_TYPE},
        [{"type": DETAIL_TYPE, "actions": [], "topics": [{"match": "a"}]}],
        [{"type": DETAIL_TYPE, "actions": ["read"], "topics": [{"match": "a"}]}],
        [{"type": DETAIL_TYPE, "actions": ["publish"], "topics": []}],
        [{"type": DETAIL_TYPE, "actions": ["publish"], "topics": ["a"]}],
        [{"type": DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": None}]}],
        [
            {
                "type": DETAIL_TYPE,
                "actions": ["publish"],
                "topics": [{"match": "a", "match_type": "Exact"}],
            }
        ],
        [
            {
                "type": DETAIL_TYPE,
                "actions": ["publish"],
                "topics": [{"match": "https://e/(", "match_type": "urlpattern"}],
            }
        ],
        [{"type": DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": "a"}] * 101}],
        # One bad entry spoils the token even after a good one: no partial acceptance.
        [
            {"type": DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": "*"}]},
            {"type": DETAIL_TYPE, "actions": ["publish"], "topics": "a"},
        ],
    ],
)
def test_grants_refusals(details: object) -> None:
    with pytest.raises(DetailsError):
        grants(details)


def _auth() -> Authenticator:
    return Authenticator(KEY, KEY)


def test_access_token_verification() -> None:
    token = mint_access_token(
        KEY, RESOURCE, publish=["urn:a"], subscribe=[("urlpattern", "https://e.com/:id")]
    )
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    auth = _auth()
    claims = auth.publisher(Token(token, Carrier.HEADER), ["urn:a"], resource=(RESOURCE,))
    assert claims.dialect == DIALECT_1
    found = Token(token, Carrier.HEADER)
    sub = auth.subscriber(found, False, resource=(RESOURCE,))
    assert sub is not None
    assert sub.subscribe == (matcher_selector("urlpattern", "https://e.com/:id"),)
    with pytest.raises(HubError) as info:
        auth.publisher(found, ["urn:b"], resource=(RESOURCE,))
    assert info.value.status == 403
    assert 'error="insufficient_scope"' in dict(info.value.headers)["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://other.example/.well-known/mercure", "exp": 4102444800}, "audience"),
        ({"exp": 4102444800}, "'aud'"),
        ({"aud": RESOURCE}, "'exp'"),
        ({"aud": RESOURCE, "exp": 1}, "expired"),
        (
            {"aud": RESOURCE, "exp": 4102444800, "authorization_details": [{"type": "mercure"}]},
            "actions",
        ),
    ],
)
def test_access_token_refusals(claims: dict[str, object], reason: str) -> None:
    token = jwt.encode(claims, KEY, algorithm="HS256", headers={"typ": "at+jwt"})
    with pytest.raises(HubError) as info:
        _auth().subscriber(Token(token, Carrier.HEADER), False, resource=(RESOURCE,))
    assert info.value.status == 401
    assert reason in info.value.reason
    assert 'error="invalid_token"' in dict(info.value.headers)["WWW-Authenticate"]


def test_aud_may_be_a_list_and_0x_tokens_stay_0x() -> None:
    claims = {"aud": ["x", RESOURCE], "exp": int(time.time()) + 60}
    token = jwt.encode(claims, KEY, algorithm="HS256", headers={"typ": "application/at+jwt"})
    sub = _auth().subscriber(Token(token, Carrier.COOKIE), False, resource=(RESOURCE,))
    assert sub is not None and sub.dialect == DIALECT_1 and sub.subscribe == ()
    legacy = jwt.encode({"mercure": {"subscribe": ["*"]}}, KEY, algorithm="HS256")
    sub = _auth().subscriber(Token(legacy, Carrier.COOKIE), False, resource=(RESOURCE,))
    assert sub is not None and sub.dialect == DIALECT_0 and sub.subscribe == ("*",)


@pytest.mark.parametrize("length", [9, 1000])  # remembered, and too long to be remembered
def test_resources_are_the_url_reached(length: int) -> None:
    settings = Settings(publisher_jwt_key=KEY)
    host = "h" * (length - 5) + ":8080"
    urls = (f"http://{host}/.well-known/mercure", f"https://{host}/.well-known/mercure")
    for _ in range(2):  # the second answer may come from the cache: the same
        assert resources(settings, {"host": f" {host} "}) == urls
        https = {"host": host, "x-forwarded-proto": "HTTPS"}
        assert resources(settings, https) == urls[::-1]
    assert resources(settings, {"host": host + "/x"}) == ()
    assert resources(settings, {}) == ()
    named = Settings(publisher_jwt_key=KEY, resource=RESOURCE)
    assert resources(named, {"host": host}) == (RESOURCE,)
