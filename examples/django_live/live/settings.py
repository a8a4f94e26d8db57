"""Settings of the example site; the ssehub ones come from the environment."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = ["ssehub.contrib.django", "notes"]
ROOT_URLCONF = "live.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_LIVE_DB", str(BASE_DIR / "notes.db")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "static/"

# Where the app publishes, and the key that signs its tokens and its visitors' cookies.
SSEHUB_URL = os.environ.get("SSEHUB_URL", "http://127.0.0.1:8000/.well-known/mercure")
SSEHUB_JWT_KEY = os.environ.get("SSEHUB_JWT_KEY", "example-key-change-me-0123456789-0123456789")
