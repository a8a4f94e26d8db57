"""The Django app: add ``"ssehub.contrib.django"`` to ``INSTALLED_APPS`` for its template tags."""

from __future__ import annotations

from django.apps import AppConfig


class SSEHubConfig(AppConfig):
    name = "ssehub.contrib.django"
    label = "ssehub"
    verbose_name = "ssehub"
