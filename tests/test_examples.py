"""The examples run: publishers reach subscribers, and the chat works between two browsers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import CHROMIUM, CHROMIUM_FLAGS, HubProcess, SSEClient, free_port, serve_process

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def site() -> Iterator[HubProcess]:
    port = free_port()
    h = serve_process([sys.executable, str(EXAMPLES / "serve.py"), "--port", str(port)], port)
    yield h
    h.stop()


def run_publisher(site: HubProcess, script: str, count: int) -> list[str]:
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / script),
            "--url",
            site.url,
            "--count",
            str(count),
            "--every",
            "0.01",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [line.split()[0] for line in done.stdout.splitlines()]


def test_ticker_publisher_reaches_the_template_subscriber(site: HubProcess) -> None:
    with site.subscribe("https://example.com/stocks/{symbol}") as sub:
        ids = run_publisher(site, "ticker.py", 5)
        events = sub.events(5)
    assert [e.id for e in events] == ids
    assert all({"symbol", "price"} <= json.loads(e.data).keys() for e in events)


def test_news_is_replayed_from_history(site: HubProcess) -> None:
    ids = run_publisher(site, "news.py", 4)
    with SSEClient(
        site.port,
        "/.well-known/mercure?topic=https%3A%2F%2Fexample.com%2Fnews%2F"
        "%7Bsection%7D&lastEventID=earliest",
        {},
    ) as sub:
        got = [e.id for e in sub.events(4)]
    assert got[-4:] == ids


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("SSEHUB_REQUIRE_BROWSER"),
    reason="Chromium is not installed",
)
def test_chat_between_two_browsers(site: HubProcess) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            alice, bob = browser.new_page(), browser.new_page()
            for page in (alice, bob):
                page.goto(site.base + "/chat")
                page.wait_for_function("document.body.dataset.live === 'yes'", timeout=20_000)
            alice.fill("input[name=who]", "alice")
            alice.fill("input[name=text]", "hello <b>bob</b>")
            alice.click("button")
            bob.wait_for_function(
                "document.getElementById('log').innerText.includes('alice: hello <b>bob</b>')",
                timeout=20_000,
            )
            assert bob.locator("#log b").count() == 0  # escaped, not markup
            bob.fill("input[name=text]", "hi alice")
            bob.click("button")
            alice.wait_for_function(
                "document.getElementById('log').innerText.includes('anonymous: hi alice')",
                timeout=20_000,
            )
        finally:
            browser.close()
