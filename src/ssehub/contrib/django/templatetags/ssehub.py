"""``{% load ssehub %}``: ``{% ssehub_url topic … %}`` renders the URL a page's EventSource
opens on those topic selectors.

    <body data-hub="{% ssehub_url 'https://example.com/books/{id}' %}">
    <script>
      const source = new EventSource(document.body.dataset.hub, {withCredentials: true});
    </script>

In an attribute, not inside ``<script>``: the template escapes ``&`` to ``&amp;``, which an
attribute decodes and a script does not.
"""

from __future__ import annotations

from django import template

from .. import subscriber_url

register = template.Library()


@register.simple_tag
def ssehub_url(*topics: str, last_event_id: str | None = None) -> str:
    """The hub's subscriber URL for ``topics`` (escaped by the template like any value)."""
    return subscriber_url(*topics, last_event_id=last_event_id)
