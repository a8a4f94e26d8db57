"""The demo at ``/``: the page, its short-lived tokens, and the clock it shows."""

from __future__ import annotations

import asyncio
import math
import time
from importlib import resources

import jwt

from ..events import Event
from ..hub import Hub
from ..mercure import HUB_PATH, LINK
from ..settings import Settings
from .answers import Headers, Response, response

CLOCK_TOPIC = "urn:ssehub:clock"
DEMO_TOPIC = "urn:ssehub:demo"
_TOKEN_TTL = 24 * 3600


class DemoPage:
    """The page, with a subscriber cookie and a publisher token for the demo topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._page: bytes | None = None

    def _tokens(self) -> tuple[str | None, str | None]:
        """Short-lived tokens for the demo page: a cookie that sees public updates and a
        publisher token for the demo topic only. Only HMAC secrets can mint them."""
        algorithm = self.settings.jwt_algorithm.split(",")[0].strip()
        if not algorithm.startswith("HS"):
            return None, None
        claims_exp = int(time.time()) + _TOKEN_TTL

        def mint(key: str | None, mercure: dict[str, list[str]]) -> str | None:
            if key is None or key.startswith(("@", "http://", "https://", "-----BEGIN")):
                return None
            return jwt.encode({"mercure": mercure, "exp": claims_exp}, key, algorithm=algorithm)

        return (
            mint(self.settings.subscriber_jwt_key, {"subscribe": []}),
            mint(self.settings.publisher_jwt_key, {"publish": [DEMO_TOPIC]}),
        )

    def render(self) -> Response:
        if self._page is None:
            self._page = resources.files("ssehub").joinpath("static/index.html").read_bytes()
        sub_token, publish_token = self._tokens()
        cookie: Headers = ()
        if sub_token is not None:
            # The spec's way for browsers: a cookie set at discovery, scoped to the hub.
            name = self.settings.cookie_name
            secure = "; Secure" if self.settings.certfile else ""  # served over HTTPS only
            cookie = (
                (
                    "Set-Cookie",
                    f"{name}={sub_token}; Path={HUB_PATH}; HttpOnly; SameSite=Strict{secure}",
                ),
            )
        page = self._page.replace(b"{{PUBLISH_TOKEN}}", (publish_token or "").encode())
        return response(
            200,
            page,
            "text/html; charset=utf-8",
            headers=(("Link", LINK), ("Cache-Control", "no-store"), *cookie),
        )


def clock_event(second: float) -> Event:
    """The demo's clock tick for one second of the server's time, on a topic of its own."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
    return Event((CLOCK_TOPIC,), now, type="tick")


class Clock:
    """The demo's clock: a publish on each wall-clock second, through the normal path.

    Each tick is for a given second, so a timer that fires a little early cannot publish the
    same second twice."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._loop = asyncio.get_running_loop()
        self._second = math.floor(time.time()) + 1
        self._handle = self._loop.call_later(self._second - time.time(), self._tick)

    def _tick(self) -> None:
        # A tick is news for a second only: it goes live, never into history.
        self._hub.announce(clock_event(self._second))
        self._second = max(self._second + 1, math.floor(time.time()) + 1)
        self._handle = self._loop.call_later(max(0.0, self._second - time.time()), self._tick)

    def cancel(self) -> None:
        self._handle.cancel()
