"""The Django app: add ``"ssehub.contrib.django"`` to ``INSTALLED_APPS`` for its template tags."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class SSEHubConfig(AppConfig):
    name = "ssehub.contrib.django"
    label = "ssehub"
    verbose_name = "ssehub"

    def ready(self) -> None:
        from . import check_settings

        checks.register(check_settings)
