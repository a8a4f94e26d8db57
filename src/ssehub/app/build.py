"""The one place a hub is put together from Settings: backend, engine, application."""

from __future__ import annotations

from ..backends import open_backend
from ..dialects import base_url
from ..hub import Hub
from ..settings import Settings
from ..topics import TopicMatcher
from .application import App


async def build(settings: Settings) -> App:
    """Open the configured backend, start the engine on the running loop and the auth (JWKS
    fetched once); ``await app.close()`` undoes it."""
    backend = open_backend(
        settings.store, settings.history_size, settings.history_max_age, settings.history_max_bytes
    )
    # The hub's URL: relative URL patterns (Mercure 1.0) and topics resolve against it.
    matcher = TopicMatcher(base=base_url(settings))
    hub = Hub(
        backend,
        heartbeat=settings.heartbeat,
        max_buffer=settings.max_write_buffer,
        matcher=matcher,
        max_pending=settings.max_pending_bytes,
        max_template_cost=settings.max_template_expressions_per_address,
        max_coalesce=settings.coalesce,
        max_round_intake=settings.max_round_intake,
    )
    await hub.start()
    try:  # keys are read here (a bad key file, a JWKS that does not answer): undo the start
        app = App(settings, hub)
        await app.auth.start()
    except BaseException:
        await hub.close()
        raise
    return app
