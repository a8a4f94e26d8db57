"""sse-starlette under uvicorn, as its users build a hub: a queue per subscriber."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

queues: set[asyncio.Queue[str]] = set()


async def events(request: Request) -> Response:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=10_000)
    queues.add(queue)

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield {"data": await queue.get()}
        finally:
            queues.discard(queue)

    return EventSourceResponse(stream(), sep="\n")


async def publish(request: Request) -> Response:
    data = (await request.body()).decode()
    for queue in list(queues):
        if not queue.full():
            queue.put_nowait(data)
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/events", events), Route("/publish", publish, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        loop="uvloop",
        http="httptools",
        backlog=4096,
    )
