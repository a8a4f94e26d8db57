"""A FastAPI app with ssehub mounted, as a user would write it (served by uvicorn in tests)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.routing import Route

from ssehub import Event, Settings
from ssehub.asgi import HubApp
from ssehub.responses import EventSourceResponse

KEY = os.environ.get("SSEHUB_TEST_KEY", "test-key-0123456789-0123456789-abcdef")

hub = HubApp(
    Settings(publisher_jwt_key=KEY, subscriber_jwt_key=KEY, anonymous=True, heartbeat=0, demo=False)
)
app = FastAPI(lifespan=hub.lifespan)
# The hub is an ASGI app of its own: a Route serves it at the exact path Mercure clients use.
app.router.routes.append(Route("/.well-known/mercure", hub, methods=["GET", "POST", "OPTIONS"]))


@app.post("/books/{book}")
async def update_book(book: str, title: str) -> dict[str, str]:
    """The application changes a resource and publishes it, in process: no HTTP round trip."""
    stored = await hub.hub.publish(Event((f"https://example.com/books/{book}",), title))
    return {"id": stored.id}


@app.get("/note")
async def note(text: str) -> EventSourceResponse:
    """A stream whose header echoes request text, as apps do (a name, a channel)."""

    async def once() -> AsyncIterator[str]:
        yield text

    return EventSourceResponse(once(), heartbeat=1, headers={"X-Note": text})


@app.get("/countdown")
async def countdown() -> EventSourceResponse:
    """An app streaming its own events with the hub's encoder."""

    async def ticks() -> AsyncIterator[dict[str, object]]:
        for n in range(3, 0, -1):
            yield {"data": f"{n}\nsecond line", "id": f"tick-{n}", "event": "tick"}
            await asyncio.sleep(0.05)

    return EventSourceResponse(ticks(), heartbeat=1)
