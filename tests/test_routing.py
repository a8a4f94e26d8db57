"""Routing under hostile selectors and churn: bounded templates, a route cache kept up to date
on join and leave (never cleared), caches bounded by bytes, and matching that agrees with a
plain regular expression."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssehub import Event, Hub, MemoryBackend
from ssehub.errors import HubError
from ssehub.routes import _PER_VIEW, RouteIndex, _cost
from ssehub.subscriber import Subscriber
from ssehub.templates import OPERATORS, Expression, parse
from ssehub.topics import ALL, TopicMatcher, check_selectors, expressions

from .support import scrape, start_hub, wait_until
from .test_hub import FakeStream, attach, preamble, started

BOMB = "urn:x:" + "{/a}{.b}" * 150  # 300 adjacent expressions in 1206 characters


# -- refusal at subscribe, over real sockets ---------------------------------------------------


def test_costly_templates_are_refused_and_others_keep_receiving() -> None:
    hub = start_hub("--anonymous", "--no-demo", "--heartbeat", "0")
    try:
        with hub.subscribe("urn:control") as control:
            assert control.status == 200
            refusals = [
                ([BOMB], "too many template expressions: more than 32"),
                ([f"urn:t:{{a{i}}}" for i in range(33)], "too many template expressions"),
                (["urn:long:" + "x" * 2048 + "{id}"], "topic template too long"),
            ]
            for topics, reason in refusals:
                with hub.subscribe(topics) as hostile:
                    assert hostile.status == 400
                    body = hostile.body.decode()
                    assert reason in body and body.count("\n") <= 1
            # At the bound is fine; so is a long exact topic (no template, nothing to try).
            within = [f"urn:t:{{a{i}}}" for i in range(32)] + ["urn:exact:" + "x" * 3000]
            with hub.subscribe(within) as fine:
                assert fine.status == 200
                hub.publish("urn:control", "still here")
                hub.publish("urn:t:9", "templated")
                assert control.events(1)[0].data == "still here"
                assert fine.events(1)[0].data == "templated"
    finally:
        hub.stop()


def test_template_bounds_follow_the_settings() -> None:
    hub = start_hub(
        "--anonymous", "--no-demo", "--heartbeat", "0", "--max-template-expressions", "2"
    )
    try:
        with hub.subscribe(["urn:a:{x}", "urn:b:{y}"]) as two:
            assert two.status == 200
        with hub.subscribe(["urn:a:{x}{y}{z}"]) as three:
            assert three.status == 400
            assert b"more than 2" in three.body
    finally:
        hub.stop()


@pytest.mark.parametrize(
    ("selector", "count"),
    [
        (ALL, 0),
        ("urn:exact", 0),
        ("{", 0),
        ("urn:{id}", 1),
        ("/x{/a}{/b}{/c}", 3),  # a run of one operator still counts each expression
        ("{a,b,c}", 1),
        ("urn:" + "x" * 5000 + "{id}", 1),  # counted even past the matcher's length bound
    ],
)
def test_expressions(selector: str, count: int) -> None:
    assert expressions(selector) == count


def test_counting_stops_past_the_bound() -> None:
    assert expressions("{/a}{.b}" * 1000, stop=5) == 6
    assert expressions("{/a}{.b}" * 2, stop=5) == 4


def test_check_selectors() -> None:
    check_selectors(["*", "urn:a", "urn:{a}{b}"], max_length=100, max_expressions=2)
    with pytest.raises(HubError) as bound:
        check_selectors(["urn:{a}", "urn:{b}{c}"], max_length=100, max_expressions=2)
    assert bound.value.status == 400
    with pytest.raises(HubError, match="at most 10"):
        check_selectors(["urn:long:{a}"], max_length=10, max_expressions=2)
    # A setting above the matcher's own bound cannot make a long template match as a literal.
    with pytest.raises(HubError, match="at most 2048"):
        check_selectors(["u" * 3000 + "{a}"], max_length=10_000, max_expressions=2)


class Watched(FakeStream):
    """A FakeStream that says when it is written to."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = asyncio.Event()

    def write(self, data: bytes) -> None:
        super().write(data)
        self.wrote.set()


async def watch(hub: Hub, topics: list[str]) -> Watched:
    stream = Watched()
    await hub.subscribe(Subscriber(stream, tuple(topics), None), None, preamble)
    return stream


async def delivered(stream: Watched, count: int) -> list[str]:
    """The ids ``stream`` got once it has ``count`` (a fan-out may wait to coalesce)."""
    async with asyncio.timeout(10):
        while len(stream.ids()) < count:
            stream.wrote.clear()
            await stream.wrote.wait()
    return stream.ids()


# -- the route cache under churn ----------------------------------------------------------------


def test_join_and_leave_update_cached_routes_instead_of_clearing() -> None:
    async def go() -> None:
        hub = await started()
        books = await watch(hub, ["https://example.com/books/{id}"])
        topics = [f"https://example.com/books/{i}" for i in range(20)]
        await asyncio.gather(*(hub.publish(Event((t,), "a")) for t in topics))
        answers = {(t,) for t in topics}
        assert set(hub.routes.cached) == answers
        assert hub.routes.recomputed == 20
        for i in range(60):  # churn: views come and go, exact, template and *
            stream = Watched()
            selector = (f"urn:churn:{i}", "urn:{x}", ALL, topics[i % 20])[i % 4]
            sub = Subscriber(stream, (selector,), None)
            await hub.subscribe(sub, None, preamble)
            if i % 8 == 3:  # one publish while a churner is there: it receives it
                await hub.publish(Event((topics[i % 20],), "c"))
                assert len(await delivered(stream, 1)) == 1
            hub.detach(sub)
        assert set(hub.routes.cached) | set(hub.routes.stale) == answers  # nothing cleared
        # A view that joins now is added to the answers it belongs in, and only to those.
        seven = await attach(hub, ["https://example.com/books/7"])
        other = await attach(hub, ["https://example.com/{kind}/3"])
        everything = await watch(hub, [ALL])
        await asyncio.gather(*(hub.publish(Event((t,), "b")) for t in topics))
        assert len(await delivered(books, 40 + 8)) == 40 + 8
        assert len(await delivered(everything, 20)) == 20
        assert len(seven.ids()) == 1
        assert len(other.ids()) == 1
        assert set(hub.routes.cached) == answers
        assert hub.routes.recomputed == 20  # every answer after the first was kept up to date
        assert hub.routes.evictions == 0

    asyncio.run(go())


def test_churn_over_sockets_routes_nothing_again() -> None:
    hub = start_hub("--anonymous", "--no-demo", "--heartbeat", "0")
    topics = [f"urn:books:{i}" for i in range(5)]

    def computed() -> float:
        return scrape(hub.base)[("ssehub_routes_computed_total", ())]

    try:
        with hub.subscribe("urn:books:{id}") as books:
            for topic in topics:
                hub.publish(topic, "first")
            books.events(5)
            before = computed()
            assert scrape(hub.base)[("ssehub_routes_cached", ())] >= 5
            for i in range(12):  # anonymous clients come and go: exact, template, *
                with hub.subscribe(["urn:other", "urn:{x}:1", "*"][i % 3]) as churner:
                    assert churner.status == 200
            with hub.subscribe("urn:books:3") as late:
                for topic in topics:
                    hub.publish(topic, "again")
                assert [e.data for e in books.events(5)] == ["again"] * 5
                assert late.events(1)[0].data == "again"
            assert computed() == before  # churn kept the cached routes up to date
    finally:
        hub.stop()


# -- incremental maintenance agrees with a fresh computation --------------------------------


class _View:
    __slots__ = ("name", "selectors")

    def __init__(self, name: int, selectors: frozenset[str]) -> None:
        self.name = name
        self.selectors = selectors


TOPICS = ["urn:a", "urn:b", "urn:a/1", "urn:b/2", "urn:c.json", "x"]
SELECTORS = [
    ALL,
    "urn:a",
    "urn:b",
    "urn:a/1",
    "x",
    "urn:{k}",
    "urn:a{/n}",
    "{+all}",
    "urn:{k}.json",
]

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.frozensets(st.sampled_from(SELECTORS), min_size=1)),
        st.tuples(st.just("leave"), st.integers(0, 20)),
        st.tuples(
            st.just("route"), st.lists(st.sampled_from(TOPICS), min_size=1, max_size=3, unique=True)
        ),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_ops, st.integers(2, 12), st.integers(1, 4))
def test_incremental_routes_equal_fresh_ones(
    ops: list[tuple[str, object]], cap: int, max_added: int
) -> None:
    matcher = TopicMatcher()
    index: RouteIndex[_View] = RouteIndex(cap, max_bytes=3000, max_added=max_added)
    live: list[_View] = []
    for n, (op, arg) in enumerate(ops):
        if op == "join":
            assert isinstance(arg, frozenset)
            view = _View(n, arg)
            live.append(view)
            index.add(view)
        elif op == "leave" and live:
            assert isinstance(arg, int)
            index.remove(live.pop(arg % len(live)))
        elif op == "route":
            assert isinstance(arg, list)
            topics = tuple(arg)
            got = index.cached.get(topics)
            if got is None:
                got = index.route(topics)
            assert sorted(v.name for v in got) == _wanting(matcher, live, topics)
        for key, views in index.cached.items():  # every cached answer is still right
            assert len(views) == len(set(views))
            assert sorted(v.name for v in views) == _wanting(matcher, live, key)
        for key, views in index.stale.items():  # stale ones miss only views added since
            assert len(views) == len(set(views))
            names = {v.name for v in views}
            wanted = set(_wanting(matcher, live, key))
            assert names <= wanted
            assert wanted - names <= {v.name for v in index.added}
        assert len(index) <= cap
        assert not set(index.cached) & set(index.stale)
        answers = [*index.cached.items(), *index.stale.items()]
        held = sum(_cost(key) + _PER_VIEW * len(views) for key, views in answers)
        assert index._bytes == held <= 3000


def _wanting(matcher: TopicMatcher, views: list[_View], topics: tuple[str, ...]) -> list[int]:
    return sorted(v.name for v in views if matcher.match_any(v.selectors, topics))


# -- bounded caches --------------------------------------------------------------------------


def test_caches_are_bounded_by_bytes() -> None:
    matcher = TopicMatcher(max_chars=100_000)
    index: RouteIndex[_View] = RouteIndex(max_bytes=100_000)
    index.add(_View(0, frozenset({"urn:{x}"})))
    for i in range(200):
        topic = f"urn:{i}:" + "t" * 10_000  # a topic can be as long as a publish body
        assert matcher.match("urn:{x}", topic) is False
        assert matcher.match(f"urn:{i}:{{+x}}", topic) is True
        index.route((topic,))
        assert matcher.cached_chars() <= 2 * 100_000
        assert index._bytes <= 100_000
    assert 0 < len(index.cached) <= 10
    huge = "urn:" + "h" * 200_000  # bigger than a whole cache: answered, never kept
    assert matcher.match("urn:{+x}", huge)
    assert len(index.route((huge,))) == 1  # "urn:{x}" matches it
    assert (huge,) not in index.cached


def test_hub_route_cache_is_bounded_by_bytes() -> None:
    async def go() -> None:
        hub = Hub(MemoryBackend(history_size=10), heartbeat=0)
        await hub.start()
        stream = await watch(hub, ["*"])
        for i in range(30):
            await hub.publish(Event((f"urn:{i}:" + "t" * 400_000,), "x"))
        assert len(await delivered(stream, 30)) == 30
        assert hub.routes._bytes <= hub.routes.max_bytes
        assert len(hub.routes.cached) < 30

    asyncio.run(go())


# -- the matcher agrees with a regular expression ---------------------------------------------


def _reference(selector: str) -> re.Pattern[str]:
    """The same language as a (backtracking) regular expression; fine for small inputs."""
    tokens = parse(selector)
    assert tokens is not None
    parts = []
    for token in tokens:
        if isinstance(token, str):
            parts.append(re.escape(token))
        else:
            assert isinstance(token, Expression)
            chars = "".join(re.escape(c) for c in sorted(token.allowed)) + "\x80-\U0010ffff"
            one = f"(?:{re.escape(token.prefix)}[{chars}]+)?"
            parts.append(one * token.repeat)
    return re.compile("".join(parts), re.DOTALL)


_literal = st.text(alphabet="ab/.;=?&#,%é", min_size=1, max_size=3).filter(
    lambda s: "{" not in s and "}" not in s
)
_expression = st.sampled_from(sorted(OPERATORS)).map(lambda op: "{" + op + "v}")
_templates = st.lists(st.one_of(_literal, _expression), min_size=1, max_size=8).map("".join)


@settings(max_examples=500, deadline=None)
@given(_templates, st.text(alphabet="ab/.;=?&#,%é", max_size=12))
def test_matcher_agrees_with_a_regex(template: str, topic: str) -> None:
    if parse(template) is None:
        return
    expected = topic == template or _reference(template).fullmatch(topic) is not None
    assert TopicMatcher().match(template, topic) is expected


def test_topic_sets_seen_once_or_twice_never_push_useful_routes_out() -> None:
    """Subscription events (``--subscriptions``) use each topic twice, at open and at close:
    once the cache is full, such topic sets are routed but not cached, so churn evicts
    nothing; a topic set seen a third time is admitted."""
    index: RouteIndex[_View] = RouteIndex(max_routes=50)
    index.add(_View(0, frozenset({"urn:useful:{n}"})))
    index.add(_View(1, frozenset({"urn:subscriptions:{+rest}"})))

    def routed(topics: tuple[str, ...]) -> tuple[_View, ...]:
        found = index.cached.get(topics)  # as the fan-out looks routes up
        return index.route(topics) if found is None else found

    useful = [(f"urn:useful:{i}",) for i in range(50)]
    for topics in useful:
        routed(topics)
    assert len(index) == 50 and index.recomputed == 50
    for i in range(500):  # a subscriber comes and goes: its topic, twice
        churn = (f"urn:subscriptions:{i}",)
        assert [v.name for v in routed(churn)] == [1]
        assert [v.name for v in routed(churn)] == [1]
    for topics in useful:
        assert [v.name for v in routed(topics)] == [0]
    assert index.recomputed == 50 + 1000  # every useful route is still cached
    assert index.evictions == 0
    assert index.declined == 1000
    for _ in range(3):  # the third time it is seen, a topic set earns a place
        routed(("urn:useful:new",))
    assert ("urn:useful:new",) in index.cached and index.evictions == 1


def test_template_expressions_are_bounded_per_client_address() -> None:
    """Each subscription is capped at --max-template-expressions, but many of them at the cap
    would still cost every publish to a new topic as much again: one address's
    subscriptions together hold --max-template-expressions-per-address at most."""
    hub = start_hub(
        *("--anonymous", "--no-demo", "--heartbeat", "0"),
        *("--max-template-expressions-per-address", "40"),
    )

    def templates(name: str, count: int) -> list[str]:
        return [f"urn:{name}:{{a{i}}}" for i in range(count)]

    try:
        with hub.subscribe(templates("first", 32)) as first:
            assert first.status == 200
            with hub.subscribe(templates("second", 16)) as refused:
                assert refused.status == 429
                reason = refused.body.decode()
                assert "too many template expressions from 127.0.0.1" in reason
                assert "--max-template-expressions-per-address" in reason
                assert reason.count("\n") <= 1
            with hub.subscribe(templates("third", 8)) as third, hub.subscribe("urn:exact") as exact:
                assert (third.status, exact.status) == (200, 200)  # 40 in all; exact ones cost 0
                hub.publish("urn:third:x", "still served")
                assert third.events(1)[0].data == "still served"

        # Once they leave, their expressions are given back.
        def accepted() -> bool:
            with hub.subscribe(templates("again", 16)) as again:
                return again.status == 200

        wait_until(accepted, "the address's template expressions to be given back")
    finally:
        hub.stop()
