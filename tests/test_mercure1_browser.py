"""Mercure 1.0 scenarios in headless Chromium, as a browser app would use the hub: an
EventSource with match / match_urlpattern, a fetch() publish with an at+jwt access token,
private updates granted by the cookie, custom ids and resuming with last_event_id."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from ssehub.access_tokens import mint_access_token

from .support import CHROMIUM, CHROMIUM_FLAGS, KEY, HubProcess, start_hub

if not os.path.exists(CHROMIUM):
    if os.environ.get("SSEHUB_REQUIRE_BROWSER"):
        raise RuntimeError("SSEHUB_REQUIRE_BROWSER is set but Chromium is not installed")
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")
if TYPE_CHECKING:
    from playwright.sync_api import Browser

RESOURCE = "https://hub.example/.well-known/mercure"
COOKIE = "mercure_access_token"  # a __Secure- name would need https, which this hub lacks
PUBLISHER = mint_access_token(KEY, RESOURCE, publish=["*"])

# Opens the stream, publishes each form in order, and returns the first message received:
# whatever must not arrive is published before a marker that must, so no waiting on silence.
SCENARIO = """
async ({params, forms, token}) => {
  const url = new URL("/.well-known/mercure", location.origin);
  for (const [name, value] of params) url.searchParams.append(name, value);
  const es = new EventSource(url, {withCredentials: true});
  await new Promise((opened, failed) => {
    es.onopen = opened;
    es.onerror = () => failed(new Error("the stream did not open"));
  });
  const first = new Promise((got) => {
    es.onmessage = (e) => { es.close(); got({id: e.lastEventId, data: e.data, type: e.type}); };
  });
  const answers = [];
  for (const form of forms) {
    const r = await fetch("/.well-known/mercure", {
      method: "POST",
      headers: {Authorization: "Bearer " + token},
      body: new URLSearchParams(form),
    });
    answers.push({status: r.status, type: r.headers.get("Content-Type"), body: await r.text()});
  }
  return {first: await first, answers};
}
"""


@dataclass
class Case:
    name: str
    params: list[tuple[str, str]]
    forms: list[list[tuple[str, str]]]
    first: str  # the id of the first message the page must receive
    cookie: list[str] = field(default_factory=list)  # exact topics the cookie grants


def _cases() -> list[Case]:
    r = [uuid.uuid4().hex for _ in range(8)]
    marker = f"urn:marker:{r[7]}"

    def form(topic: str, event_id: str, private: bool = False) -> list[tuple[str, str]]:
        fields = [("topic", topic), ("id", event_id), ("data", f"data for\n\n  {event_id}")]
        return fields + ([("private", "on")] if private else [])

    return [
        Case("raw string", [("match", r[0])], [form(r[0], "id-raw")], "id-raw"),
        Case(
            "several matchers",
            [("match", "foo"), ("match", r[1])],
            [form(r[1], "id-several")],
            "id-several",
        ),
        Case(
            "URI",
            [("match", f"https://example.net/foo/{r[2]}")],
            [form(f"https://example.net/foo/{r[2]}", "id-uri")],
            "id-uri",
        ),
        Case(
            "URL pattern",
            [("match_urlpattern", "https://example.net/foo/:random")],
            [form(f"https://example.net/foo/{r[3]}", "id-pattern")],
            "id-pattern",
        ),
        Case(
            "nonmatching URL pattern",
            [("match_urlpattern", "https://example.net/bar/:var"), ("match", marker)],
            [form(f"https://example.net/foo/{r[3]}", "id-no-pattern"), form(marker, "id-m1")],
            "id-m1",
        ),
        Case(
            "nonmatching exact (no template reading of braces)",
            [("match", "https://example.net/foo/{var}"), ("match", marker)],
            [form(f"https://example.net/foo/{r[4]}", "id-no-exact"), form(marker, "id-m2")],
            "id-m2",
        ),
        Case(
            "private, anonymous",
            [("match", r[5]), ("match", marker)],
            [form(r[5], "id-private-hidden", private=True), form(marker, "id-m3")],
            "id-m3",
        ),
        Case(
            "private, granted by the cookie",
            [("match", r[6])],
            [form(r[6], "id-private-seen", private=True)],
            "id-private-seen",
            cookie=[r[6]],
        ),
    ]


@pytest.fixture(scope="module")
def hub() -> Iterator[HubProcess]:
    h = start_hub(
        "--no-demo",
        "--heartbeat",
        "0",
        "--anonymous",
        "--resource",
        RESOURCE,
        "--access-cookie-name",
        COOKIE,
    )
    yield h
    h.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c.name)
def test_scenario(hub: HubProcess, browser: Browser, case: Case) -> None:
    context = browser.new_context()
    try:
        if case.cookie:
            grant = mint_access_token(KEY, RESOURCE, subscribe=case.cookie)
            context.add_cookies(
                [{"name": COOKIE, "value": grant, "url": hub.base + "/.well-known/mercure"}]
            )
        page = context.new_page()
        page.goto(hub.base + "/healthz")
        result = page.evaluate(
            SCENARIO, {"params": case.params, "forms": case.forms, "token": PUBLISHER}
        )
        for answer, form in zip(result["answers"], case.forms, strict=True):
            assert answer["status"] == 200, answer
            assert answer["type"].startswith("text/plain")
            assert answer["body"] == dict(form)["id"]  # the publisher's custom id, kept
        first = result["first"]
        assert first["id"] == case.first
        assert first["type"] == "message"
        assert first["data"] == f"data for\n\n  {case.first}"
    finally:
        context.close()


def test_resume_with_last_event_id(hub: HubProcess, browser: Browser) -> None:
    topic = f"urn:resume:{uuid.uuid4().hex}"
    for event_id in ("id-a", "id-b"):
        assert hub.publish(topic, f"data for\n\n  {event_id}", PUBLISHER, id=event_id).text == (
            event_id
        )
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(hub.base + "/healthz")
        params = [("match", topic), ("last_event_id", "id-a")]
        marker = [("topic", topic), ("id", "id-c"), ("data", "data for\n\n  id-c")]
        result = page.evaluate(SCENARIO, {"params": params, "forms": [marker], "token": PUBLISHER})
        assert result["first"]["id"] == "id-b"  # replayed after id-a, before the live id-c
    finally:
        context.close()
