"""The demo page in headless Chromium: the clock ticks live, the publish form reaches the feed."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .support import CHROMIUM, CHROMIUM_FLAGS, HubProcess, start_hub

if not os.path.exists(CHROMIUM):
    if os.environ.get("SSEHUB_REQUIRE_BROWSER"):
        raise RuntimeError("SSEHUB_REQUIRE_BROWSER is set but Chromium is not installed")
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def demo_hub() -> Iterator[HubProcess]:
    # No key: serve makes one and turns the demo on, as on a user's first run.
    h = start_hub(key=None)
    yield h
    h.stop()


def test_clock_ticks_and_publish_form_reaches_feed(demo_hub: HubProcess) -> None:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(demo_hub.base + "/")
            clock = page.locator("#clock")
            page.wait_for_function(
                "Number(document.getElementById('clock').dataset.ticks || 0) >= 1", timeout=20_000
            )
            first = clock.inner_text()
            page.wait_for_function(
                "Number(document.getElementById('clock').dataset.ticks || 0) >= 3", timeout=20_000
            )
            assert clock.inner_text() != first
            assert page.locator("#status").inner_text() == "live"

            page.fill("textarea[name=data]", "hello from chromium")
            page.click("button[type=submit]")
            page.wait_for_function(
                "document.getElementById('feed').innerText.includes('hello from chromium')",
                timeout=20_000,
            )
            assert page.locator("#published").inner_text().startswith("published urn:uuid:")
        finally:
            browser.close()
