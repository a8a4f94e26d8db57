"""ssehub.contrib.django and the example site (examples/django_live) under Django's live test
server, beside a real `ssehub serve`: saved notes reach an open Chromium page, rolled-back
ones never leave, and publishing waits for the commit."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from unittest import mock

import pytest

pytest.importorskip("django")

SITE = Path(__file__).resolve().parent.parent / "examples" / "django_live"
sys.path.insert(0, str(SITE))
os.environ["DJANGO_SETTINGS_MODULE"] = "live.settings"

import django  # noqa: E402

django.setup()

from django.db import transaction  # noqa: E402
from django.test import LiveServerTestCase, override_settings  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402
from notes.models import TOPIC, Note  # noqa: E402

from ssehub.contrib import django as ssehub  # noqa: E402

from .support import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_FLAGS,
    KEY,
    HubProcess,
    free_port,
    make_token,
    start_hub,
)


@pytest.fixture(scope="module", autouse=True)
def test_database() -> Iterator[None]:
    """Django's test database (in-memory SQLite, migrated), as its test runner makes it."""
    made = setup_databases(verbosity=0, interactive=False)
    yield
    teardown_databases(made, verbosity=0)


class NotesLive(LiveServerTestCase):
    host = "127.0.0.1"
    port = 0  # the kernel's pick, held from the start (a port picked ahead may be taken)
    hub: ClassVar[HubProcess]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # the live server first: the hub's CORS names its origin
        cls.hub = start_hub("--no-demo", "--cors-origins", cls.live_server_url)
        cls.addClassCleanup(cls.hub.stop)
        cls.enterClassContext(override_settings(SSEHUB_URL=cls.hub.url, SSEHUB_JWT_KEY=KEY))

    def test_saved_notes_reach_an_open_page(self) -> None:
        if not os.path.exists(CHROMIUM):
            if os.environ.get("SSEHUB_REQUIRE_BROWSER"):
                raise RuntimeError("SSEHUB_REQUIRE_BROWSER is set but Chromium is not installed")
            pytest.skip("Chromium is not installed (apt-get install chromium)")
        sync_api = pytest.importorskip("playwright.sync_api")
        Note.objects.create(text="before the page")
        # Playwright's sync API keeps an event loop in this thread; the ORM calls below are
        # still synchronous, which this tells Django.
        with (
            mock.patch.dict(os.environ, {"DJANGO_ALLOW_ASYNC_UNSAFE": "true"}),
            sync_api.sync_playwright() as pw,
        ):
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(self.live_server_url + "/")
                page.wait_for_function("document.body.dataset.live === 'yes'", timeout=20_000)
                assert page.locator("#notes li").all_inner_texts() == ["before the page"]
                cookie = next(
                    c for c in page.context.cookies() if c["name"] == "mercureAuthorization"
                )
                assert (cookie["path"], cookie["httpOnly"]) == ("/.well-known/mercure", True)

                note = Note.objects.create(text="saved <b>live</b>")
                page.wait_for_function(
                    "document.querySelectorAll('#notes li').length === 2", timeout=20_000
                )
                note.text = "edited live"
                note.save()
                page.wait_for_function(
                    "document.querySelector('#notes li:last-child').textContent === 'edited live'",
                    timeout=20_000,
                )
                assert page.locator("#notes li").all_inner_texts() == [
                    "before the page",
                    "edited live",
                ]
            finally:
                browser.close()

    def test_a_rolled_back_save_is_never_published(self) -> None:
        token = make_token(subscribe=[TOPIC + "/{id}"])

        def failing_view() -> None:
            with transaction.atomic():
                Note.objects.create(text="rolled back")
                raise RuntimeError("the view failed")

        with self.hub.subscribe(TOPIC + "/{id}", token=token) as sub:
            with pytest.raises(RuntimeError):
                failing_view()
            kept = Note.objects.create(text="kept")
            [event] = sub.events(1)
        assert event.event == "note.created"
        assert event.data.startswith(f'{{"id":{kept.pk},"text":"kept","created":"')

    def test_publishing_waits_for_the_commit(self) -> None:
        token = make_token(subscribe=["urn:django:{n}"])
        with self.hub.subscribe("urn:django:{n}", token=token) as sub:
            with transaction.atomic():
                deferred = ssehub.publish("urn:django:1", {"n": 1})
                # Not deferred: if publish() did not wait, its event would come first.
                self.hub.publish("urn:django:2", "direct").raise_for_status()
            first, second = sub.events(2)
        assert (first.data, second.data) == ("direct", '{"n":1}')
        assert second.id == deferred and deferred.startswith("urn:uuid:")

    def test_a_failed_publish_after_commit_is_logged_not_raised(self) -> None:
        down = f"http://127.0.0.1:{free_port()}/.well-known/mercure"
        with (
            override_settings(SSEHUB_URL=down),
            self.assertLogs("ssehub.contrib.django", logging.ERROR) as logged,
        ):
            event_id = ssehub.publish("urn:django:lost", "x")
        [line] = logged.output
        assert event_id in line
        assert "gave up after" in line

    def test_subscriber_url_and_settings(self) -> None:
        url = ssehub.subscriber_url("https://example.com/a/{id}", "b", last_event_id="x")
        assert url == (
            self.hub.url + "?topic=https%3A%2F%2Fexample.com%2Fa%2F%7Bid%7D&topic=b&lastEventID=x"
        )
        with override_settings(SSEHUB_PUBLIC_URL="https://hub.example.com/.well-known/mercure"):
            assert ssehub.subscriber_url("b").startswith("https://hub.example.com/")
        from django.core import checks
        from django.core.exceptions import ImproperlyConfigured

        assert checks.run_checks() == []
        with override_settings(SSEHUB_URL=None):
            [problem] = checks.run_checks()
            assert (problem.id, problem.level) == ("ssehub.E001", checks.ERROR)
            assert "SSEHUB_URL" in problem.msg
            with pytest.raises(ImproperlyConfigured, match="SSEHUB_URL"):
                ssehub.publish("b")
