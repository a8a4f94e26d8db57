"""What the example publishers share: the hub URL, a token, a loop with a bounded count."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable

from ssehub.client import AsyncPublisher

KEY = os.environ.get("SSEHUB_JWT_KEY", "example-key-change-me-0123456789-0123456789")


def run(make: Callable[[int], tuple[str, str]], every: float, what: str) -> None:
    """Publish ``make(n)`` -> (topic, data) every ``every`` seconds, ``--count`` times."""
    parser = argparse.ArgumentParser(description=f"Publish {what} to the examples' hub.")
    parser.add_argument("--url", default="http://127.0.0.1:8080/.well-known/mercure")
    parser.add_argument("--count", type=int, default=0, help="stop after N (0: never)")
    parser.add_argument("--every", type=float, default=every, help="seconds between updates")
    args = parser.parse_args()

    async def loop() -> None:
        async with AsyncPublisher(args.url, key=KEY) as hub:  # one connection, minted tokens
            n = 0
            while not args.count or n < args.count:
                topic, data = make(n)
                print(await hub.publish(topic, data), topic, data, flush=True)
                n += 1
                await asyncio.sleep(args.every)

    asyncio.run(loop())
