"""One page."""

from __future__ import annotations

from django.urls import path
from notes.views import index

urlpatterns = [path("", index, name="index")]
