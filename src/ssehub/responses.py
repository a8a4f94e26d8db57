"""``EventSourceResponse``: stream an app's own events with ssehub's encoder (Starlette)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping

from starlette.responses import StreamingResponse

from .errors import field_value
from .sse import HEARTBEAT, ServerEvent, encode_event

Item = ServerEvent | Mapping[str, object] | str


def _encode(item: Item) -> bytes:
    if isinstance(item, str):
        return encode_event(item)
    if isinstance(item, ServerEvent):
        return encode_event(
            item.data,
            id=item.id or None,
            event=None if item.event == "message" else item.event,
            retry=item.retry,
        )
    retry = item.get("retry")
    return encode_event(
        str(item.get("data", "")),
        id=None if item.get("id") is None else str(item.get("id")),
        event=None if item.get("event") is None else str(item.get("event")),
        retry=retry if isinstance(retry, int) else None,
    )


class EventSourceResponse(StreamingResponse):
    """A ``text/event-stream`` response from an async iterable of events (``str``, a mapping
    with ``data``/``id``/``event``/``retry``, or :class:`ssehub.sse.ServerEvent`).

    Headers go out at once with a first comment; a comment every ``heartbeat`` seconds keeps
    proxies from timing the stream out; the iterator is closed when the client leaves.
    """

    def __init__(
        self,
        events: AsyncIterable[Item],
        *,
        heartbeat: float = 15.0,
        retry: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # Header values often carry request data: no CR or LF may split the head.
        extra = {name: field_value(value) for name, value in (headers or {}).items()}
        super().__init__(
            self._body(events, heartbeat, retry),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **extra},
        )

    @staticmethod
    async def _body(
        events: AsyncIterable[Item], heartbeat: float, retry: int | None
    ) -> AsyncIterator[bytes]:
        yield HEARTBEAT + (b"retry: %d\n\n" % retry if retry is not None else b"")
        iterator = aiter(events)
        pending: asyncio.Future[Item] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(iterator))
                done, _ = await asyncio.wait({pending}, timeout=heartbeat or None)
                if not done:
                    yield HEARTBEAT
                    continue
                try:
                    item = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                yield _encode(item)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                await closer()
