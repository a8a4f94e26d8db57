"""Publish from Django: settings, publishing after the transaction commits, and subscriber
URLs and cookies for the pages.

    # settings.py
    INSTALLED_APPS = [..., "ssehub.contrib.django"]   # for {% load ssehub %}
    SSEHUB_URL = "http://hub:8000/.well-known/mercure"
    SSEHUB_JWT_KEY = env("SSEHUB_JWT_KEY")

    # anywhere a model changes
    from ssehub.contrib import django as ssehub
    ssehub.publish(f"https://example.com/books/{book.pk}", {"title": book.title})

Settings: ``SSEHUB_URL`` (required), ``SSEHUB_PUBLIC_URL`` (where browsers reach the hub),
``SSEHUB_JWT_KEY`` or ``SSEHUB_PUBLISHER_JWT_KEY`` / ``SSEHUB_SUBSCRIBER_JWT_KEY``,
``SSEHUB_PUBLISHER_TOKEN``, ``SSEHUB_JWT_ALGORITHM``, ``SSEHUB_COOKIE_NAME``,
``SSEHUB_COOKIE_DOMAIN``, ``SSEHUB_COOKIE_LIFETIME``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.core.signals import setting_changed
from django.db import transaction
from django.http import HttpResponseBase

from ...publisher import HubClientError, Publisher
from .._hub import HubSettings

log = logging.getLogger("ssehub.contrib.django")

_lock = threading.Lock()
_state: tuple[HubSettings, Publisher] | None = None

_Response = TypeVar("_Response", bound=HttpResponseBase)


def _dumps(data: object) -> str:
    # Dates, decimals, UUIDs and lazy strings as Django's own JSON does.
    return DjangoJSONEncoder(ensure_ascii=False, separators=(",", ":")).encode(data)


def _read() -> HubSettings:
    return HubSettings.read(lambda name: getattr(settings, name, None))


def _hub() -> tuple[HubSettings, Publisher]:
    global _state
    with _lock:
        if _state is None:
            try:
                hub = _read()
            except ValueError as exc:
                raise ImproperlyConfigured(str(exc)) from None
            _state = (hub, hub.publisher(dumps=_dumps))
        return _state


def check_settings(**_: object) -> list[checks.CheckMessage]:
    """``manage.py check`` (and every ``runserver``) says what is missing, before a publish."""
    try:
        _read()
    except ValueError as exc:
        return [checks.Error(str(exc), id="ssehub.E001")]
    return []


def _forget(*, setting: str, **_: Any) -> None:
    """Settings changed (``override_settings`` in tests): read them again on next use."""
    global _state
    if setting.startswith("SSEHUB_"):
        with _lock:
            if _state is not None:
                _state[1].close()
            _state = None


setting_changed.connect(_forget)


def publisher() -> Publisher:
    """This process's :class:`~ssehub.publisher.Publisher`, made from the settings."""
    return _hub()[1]


def publish(
    topic: str | Sequence[str],
    data: object = "",
    *,
    private: bool = False,
    id: str | None = None,
    type: str | None = None,
    retry: int | None = None,
    using: str | None = None,
) -> str:
    """Publish one update once the current transaction commits, and return its id.

    Subscribers never see an update whose change was rolled back; outside a transaction it
    goes at once. ``data`` is serialised now (JSON by Django's encoder unless a string), so
    later changes to the object do not leak in. The publish itself happens after the commit:
    a failure then (the hub refused, or stayed away through the retries) is logged on
    ``ssehub.contrib.django`` with the id, not raised into the code that committed.
    """
    pub = publisher()
    text = data if isinstance(data, str) else _dumps(data)
    event_id = id or f"urn:uuid:{uuid.uuid4()}"

    def send() -> None:
        try:
            pub.publish(topic, text, private=private, id=event_id, type=type, retry=retry)
        except HubClientError as exc:
            log.error("could not publish %s to %s: %s", event_id, topic, exc)

    transaction.on_commit(send, using=using)
    return event_id


def subscriber_url(*topics: str, last_event_id: str | None = None) -> str:
    """The URL for ``new EventSource(…)`` on these topic selectors (``SSEHUB_PUBLIC_URL``)."""
    return _hub()[0].subscriber_url(topics, last_event_id)


def authorize(response: _Response, *topics: str) -> _Response:
    """Set the ``mercureAuthorization`` cookie on ``response``: its browser may then receive
    private updates of these topic selectors (a user's own, say). Returns ``response``."""
    _hub()[0].subscriber_cookie(topics).set_on(response.set_cookie)
    return response


__all__ = ["authorize", "publish", "publisher", "subscriber_url"]
