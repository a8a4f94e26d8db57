"""A note, published to the hub whenever it is saved (after the transaction commits)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.db.models.signals import post_save
from django.dispatch import receiver

from ssehub.contrib import django as ssehub

TOPIC = "https://example.com/notes"


class Note(models.Model):
    text: models.CharField[str, str] = models.CharField(max_length=500)
    created: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created"]

    def __str__(self) -> str:
        return self.text


@receiver(post_save, sender=Note)
def announce(sender: type[Note], instance: Note, created: bool, **_: Any) -> None:
    # Private: only browsers holding the cookie the page set receive it. A real app would
    # publish to a per-user topic and authorize each user for their own.
    ssehub.publish(
        f"{TOPIC}/{instance.pk}",
        {"id": instance.pk, "text": instance.text, "created": instance.created},
        private=True,
        type="note.created" if created else "note.updated",
    )
