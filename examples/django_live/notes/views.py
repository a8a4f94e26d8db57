"""The page: the notes so far, and an EventSource for the ones to come."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from ssehub.contrib import django as ssehub

from .models import TOPIC, Note


def index(request: HttpRequest) -> HttpResponse:
    response = render(
        request, "notes/index.html", {"notes": Note.objects.all(), "topic": TOPIC + "/{id}"}
    )
    return ssehub.authorize(response, TOPIC + "/{id}")
