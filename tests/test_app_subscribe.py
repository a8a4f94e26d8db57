"""The app's subscribe answer when the same query comes again (its parse is kept): the same
subscription, its own Last-Event-ID, refusals every time, template costs charged each time."""

from __future__ import annotations

import asyncio

from ssehub import Settings
from ssehub.app import OpenedStream, Request, Response, build

from .support import HUB, KEY


def _get(query: str, client: str = "10.0.0.1", **headers: str) -> Request:
    return Request("GET", HUB, query, dict(headers), client=client)


def test_a_query_asked_again_gets_the_same_subscription_with_its_own_resume_point() -> None:
    async def go() -> None:
        settings = Settings(publisher_jwt_key=KEY, subscriber_jwt_key=KEY, anonymous=True)
        app = await build(settings)
        first = app.handle(_get("topic=a&topic=b"))
        again = app.handle(_get("topic=a&topic=b"))
        resumed = app.handle(_get("topic=a&topic=b", **{"last-event-id": "e7"}))
        other = app.handle(_get("topic=c"))
        assert isinstance(first, OpenedStream) and isinstance(again, OpenedStream)
        assert isinstance(resumed, OpenedStream) and isinstance(other, OpenedStream)
        assert first.selectors == again.selectors == resumed.selectors == ("a", "b")
        assert first.last_event_id is None and again.last_event_id is None
        assert resumed.last_event_id == "e7"
        assert other.selectors == ("c",)
        for _ in range(2):
            refused = app.handle(_get("nothing=here"))
            assert isinstance(refused, Response) and refused.status == 400
        await app.close()

    asyncio.run(go())


def test_template_expressions_are_charged_for_every_subscriber_of_a_kept_query() -> None:
    async def go() -> None:
        settings = Settings(publisher_jwt_key=KEY, subscriber_jwt_key=KEY, anonymous=True)
        app = await build(settings)
        budget = app.hub.template_budget
        opened = [app.handle(_get("topic=/books/{id}")) for _ in range(3)]
        subs = []
        for answer in opened:
            assert isinstance(answer, OpenedStream)
            subs.append(answer.subscriber(_NoStream()))
        assert budget.used("10.0.0.1") == 3
        for sub in subs:
            app.stream_closed(sub)
        assert budget.used("10.0.0.1") == 0
        await app.close()

    asyncio.run(go())


class _NoStream:
    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        pass

    async def drain(self) -> None:
        pass


def test_a_long_query_is_answered_but_not_kept() -> None:
    async def go() -> None:
        settings = Settings(publisher_jwt_key=KEY, subscriber_jwt_key=KEY, anonymous=True)
        app = await build(settings)
        topic = "urn:" + "x" * 3000
        opened = app.handle(_get(f"topic={topic}"))
        assert isinstance(opened, OpenedStream) and opened.selectors == (topic,)
        assert not app.subscribing._wanted_cache
        await app.close()

    asyncio.run(go())
