"""The examples' web app: ssehub mounted in Starlette, three pages, and a chat endpoint.

python examples/serve.py                 # http://127.0.0.1:8080/ticker, /chat, /news
python examples/ticker.py                # then start a publisher in another terminal
"""

from __future__ import annotations

import argparse
import html
import os
from pathlib import Path
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ssehub import Event, Settings
from ssehub.asgi import HubApp

KEY = os.environ.get("SSEHUB_JWT_KEY", "example-key-change-me-0123456789-0123456789")
PAGES = Path(__file__).with_name("pages")
CHAT = "urn:example:chat"

hub = HubApp(
    Settings(
        publisher_jwt_key=KEY, subscriber_jwt_key=KEY, anonymous=True, heartbeat=15, demo=False
    )
)


def page(name: str) -> Response:
    return HTMLResponse((PAGES / f"{name}.html").read_text())


async def ticker(_: Request) -> Response:
    return page("ticker")


async def news(_: Request) -> Response:
    return page("news")


async def chat(_: Request) -> Response:
    return page("chat")


async def say(request: Request) -> Response:
    """The chat's own endpoint: the app checks the message and publishes it in process."""
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    who = form.get("who", "").strip()[:40] or "anonymous"
    text = form.get("text", "").strip()[:500]
    if not text:
        return JSONResponse({"error": "empty message"}, status_code=400)
    stored = await hub.hub.publish(Event((CHAT,), f"{html.escape(who)}: {html.escape(text)}"))
    return JSONResponse({"id": stored.id})


app = Starlette(
    routes=[
        Route("/.well-known/mercure", hub, methods=["GET", "POST", "OPTIONS"]),
        Route("/ticker", ticker),
        Route("/news", news),
        Route("/chat", chat),
        Route("/chat/say", say, methods=["POST"]),
    ],
    lifespan=hub.lifespan,
)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the ssehub examples.")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
