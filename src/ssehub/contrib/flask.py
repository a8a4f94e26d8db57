"""Publish from Flask: an extension configured from ``app.config``.

    app.config["SSEHUB_URL"] = "http://hub:8000/.well-known/mercure"
    app.config["SSEHUB_JWT_KEY"] = os.environ["SSEHUB_JWT_KEY"]
    hub = SSEHub(app)          # or hub = SSEHub(); hub.init_app(app) in a factory

    @app.post("/books/<int:book>")
    def update(book):
        ...
        hub.publish(f"https://example.com/books/{book}", {"title": title})

Templates get ``ssehub_url(topic, …)`` for the page's ``EventSource``; :meth:`SSEHub.authorize`
sets the cookie that lets a browser receive its private topics. The settings are those of
:mod:`ssehub.contrib.django` (``SSEHUB_URL``, ``SSEHUB_JWT_KEY``, ``SSEHUB_PUBLIC_URL``…).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from flask import Flask, current_app
from werkzeug.wrappers import Response

from ..publisher import Publisher
from ._hub import HubSettings

_Response = TypeVar("_Response", bound=Response)


@dataclass(frozen=True, slots=True)
class _State:
    settings: HubSettings
    publisher: Publisher


class SSEHub:
    """The Flask extension: one publisher per app, used from requests, CLI commands and
    background jobs that run inside the app context."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read ``app.config`` (``RuntimeError`` naming what is missing) and register."""
        try:
            settings = HubSettings.read(app.config.get)
        except ValueError as exc:
            raise RuntimeError(f"ssehub: {exc}") from None
        app.extensions["ssehub"] = _State(settings, settings.publisher(dumps=app.json.dumps))
        app.jinja_env.globals["ssehub_url"] = self.subscriber_url

    @staticmethod
    def _state() -> _State:
        state = current_app.extensions.get("ssehub")
        if not isinstance(state, _State):
            raise RuntimeError("ssehub: call SSEHub(app) or init_app(app) first")
        return state

    @property
    def publisher(self) -> Publisher:
        """The current app's :class:`~ssehub.publisher.Publisher`."""
        return self._state().publisher

    def publish(
        self,
        topic: str | Sequence[str],
        data: object = "",
        *,
        private: bool = False,
        id: str | None = None,
        type: str | None = None,
        retry: int | None = None,
    ) -> str:
        """Publish one update now and return its id; ``data`` that is not a string goes as
        JSON (the app's JSON provider). Raises ``HubRefused`` / ``HubUnavailable``."""
        return self.publisher.publish(topic, data, private=private, id=id, type=type, retry=retry)

    def subscriber_url(self, *topics: str, last_event_id: str | None = None) -> str:
        """The URL for ``new EventSource(…)`` on these topic selectors."""
        return self._state().settings.subscriber_url(topics, last_event_id)

    def authorize(self, response: _Response, *topics: str) -> _Response:
        """Set the ``mercureAuthorization`` cookie on ``response`` for the private updates of
        these topic selectors. Returns ``response``."""
        self._state().settings.subscriber_cookie(topics).set_on(response.set_cookie)
        return response


__all__ = ["SSEHub"]
