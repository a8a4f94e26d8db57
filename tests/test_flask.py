"""ssehub.contrib.flask: a Flask app on Werkzeug's own server publishes to a real `ssehub serve`,
and the cookie it sets lets a subscriber receive private updates."""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

pytest.importorskip("flask")
from flask import Flask, Response, make_response, render_template_string, request
from werkzeug.serving import BaseWSGIServer, make_server

from ssehub.client import HubRefused
from ssehub.contrib.flask import SSEHub

from .support import KEY, HubProcess, free_port

BOOKS = "https://example.com/books/{id}"


@dataclass
class Site:
    base: str
    server: BaseWSGIServer


def make_app(hub_url: str, **config: object) -> tuple[Flask, SSEHub]:
    app = Flask(__name__)
    app.config.update({"SSEHUB_URL": hub_url, "SSEHUB_JWT_KEY": KEY, **config})
    hub = SSEHub()
    hub.init_app(app)

    @app.post("/books/<int:book>")
    def update(book: int) -> dict[str, str]:
        event_id = hub.publish(
            f"https://example.com/books/{book}",
            {"title": request.form["title"], "at": datetime.date(1965, 8, 1)},
            private="private" in request.form,
            type="book",
        )
        return {"id": event_id}

    @app.get("/")
    def page() -> Response:
        html = render_template_string(
            '<body data-hub="{{ ssehub_url(topic) }}"></body>', topic=BOOKS
        )
        return hub.authorize(make_response(html), BOOKS)

    return app, hub


@pytest.fixture(scope="module")
def site(hub: HubProcess) -> Iterator[Site]:
    app, _ = make_app(hub.url)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Site(f"http://127.0.0.1:{port}", server)
    server.shutdown()
    thread.join(10)


def test_a_request_publishes_to_the_hub(hub: HubProcess, site: Site) -> None:
    with hub.subscribe(BOOKS) as sub:
        answer = httpx.post(site.base + "/books/7", data={"title": "Dune"}, timeout=10)
        assert answer.status_code == 200, answer.text
        [event] = sub.events(1)
    assert event.id == answer.json()["id"]
    assert event.event == "book"
    assert json.loads(event.data) == {"title": "Dune", "at": "Sun, 01 Aug 1965 00:00:00 GMT"}


def test_the_page_cookie_authorizes_private_updates(hub: HubProcess, site: Site) -> None:
    page = httpx.get(site.base + "/", timeout=10)
    cookie = page.cookies["mercureAuthorization"]
    set_cookie = page.headers["set-cookie"]
    assert "HttpOnly" in set_cookie
    assert "Path=/.well-known/mercure" in set_cookie
    assert "SameSite=Strict" in set_cookie
    url = hub.url + "?topic=https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D"
    assert f'data-hub="{url}"' in page.text
    with (
        hub.subscribe(BOOKS, headers={"Cookie": f"mercureAuthorization={cookie}"}) as member,
        hub.subscribe(BOOKS) as anonymous,
    ):
        private = httpx.post(
            site.base + "/books/8", data={"title": "secret", "private": "1"}, timeout=10
        ).json()["id"]
        public = httpx.post(site.base + "/books/9", data={"title": "open"}, timeout=10).json()["id"]
        assert [e.id for e in member.events(2)] == [private, public]
        assert [e.id for e in anonymous.events(1)] == [public]  # the private one skipped


def test_refusals_reach_the_caller(hub: HubProcess) -> None:
    app, hub_ext = make_app(hub.url, SSEHUB_JWT_KEY=None, SSEHUB_PUBLISHER_TOKEN="bad")
    with app.app_context(), pytest.raises(HubRefused) as refused:
        hub_ext.publish("urn:flask", "x")
    assert refused.value.status == 401


def test_configuration_errors_name_the_setting(hub: HubProcess) -> None:
    with pytest.raises(RuntimeError, match="SSEHUB_URL"):
        make_app("")
    with pytest.raises(RuntimeError, match="SSEHUB_JWT_KEY"):
        make_app(hub.url, SSEHUB_JWT_KEY=None)
    with pytest.raises(RuntimeError, match="SSEHUB_COOKIE_LIFETIME"):
        make_app(hub.url, SSEHUB_COOKIE_LIFETIME="1h")
    _, unbound = make_app(hub.url)
    with Flask("other").app_context(), pytest.raises(RuntimeError, match="init_app"):
        unbound.publish("urn:flask", "x")
