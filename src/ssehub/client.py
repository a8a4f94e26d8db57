"""An asyncio client for any Mercure hub, on httpx: subscribe (reconnect, resume, gap signal)
and publish; :class:`Publisher` / :class:`AsyncPublisher` (from :mod:`ssehub.publisher`) for
applications that publish often.

    async for item in subscribe("http://127.0.0.1:8000/.well-known/mercure", ["books/{id}"]):
        if isinstance(item, Gap):
            ...  # history no longer covered the resume point: re-fetch state
        else:
            print(item.id, item.data)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx

from .mercure import GAP_EVENT
from .publisher import (
    NO_RETRIES,
    AsyncPublisher,
    HubClientError,
    HubRefused,
    HubUnavailable,
    Publisher,
    Retries,
    answer_id,
    form_body,
)
from .sse import Decoder, ServerEvent

log = logging.getLogger("ssehub.client")

EARLIEST = "earliest"


@dataclass(frozen=True, slots=True)
class Gap:
    """The hub could not replay everything after ``requested``: events may have been lost."""

    requested: str
    replay_from: str | None
    reason: str


class NotAStream(Exception):
    """The URL answered, but not with an event stream (a page, a 204): retrying would not
    help, so, as an EventSource does, the subscription fails."""

    def __init__(self, status: int, content_type: str) -> None:
        super().__init__(f"{status} with Content-Type {content_type or '(none)'!r}")
        self.status = status
        self.content_type = content_type


def _is_stream(content_type: str) -> bool:
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def publish(
    url: str,
    topics: str | Sequence[str],
    data: str = "",
    *,
    token: str | None = None,
    private: bool = False,
    id: str | None = None,
    type: str | None = None,
    retry: int | None = None,
    client: httpx.AsyncClient | None = None,
) -> str:
    """Publish one update; returns its id (the hub makes one if ``id`` is not given).

    One attempt: raises :class:`HubRefused` on a 4xx, :class:`HubUnavailable` on a 5xx, httpx
    errors when the hub cannot be reached. :class:`AsyncPublisher` retries and keeps its
    connection.
    """
    body = form_body(topics, data, private=private, id=id, type=type, retry=retry)
    own = client is None
    http = client or httpx.AsyncClient(timeout=10)
    try:
        answer = await http.post(
            url,
            content=body,
            headers={**_auth(token), "Content-Type": "application/x-www-form-urlencoded"},
        )
    finally:
        if own:
            await http.aclose()
    return answer_id(answer)


async def subscribe(
    url: str,
    topics: str | Sequence[str],
    *,
    token: str | None = None,
    last_event_id: str | None = None,
    reconnect: bool = True,
    retry: float = 3.0,
    max_retry: float = 30.0,
    client: httpx.AsyncClient | None = None,
    retry_first: bool = True,
) -> AsyncIterator[ServerEvent | Gap]:
    """Events of the given topic selectors, for as long as the caller iterates.

    On a dropped connection it waits (the hub's ``retry`` field wins over ``retry``; doubling
    up to ``max_retry`` while the hub stays away) and resumes with ``Last-Event-ID``. A gap —
    the hub's ``ssehub.gap`` event, or a ``Last-Event-ID: earliest`` answer to a specific id
    from another Mercure hub — is yielded as a :class:`Gap` before the replayed events.
    With ``retry_first=False`` a hub that does not answer the first attempt (unreachable, or
    a 5xx) raises the httpx error instead: a command line tool reports it and stops.
    """
    params = httpx.QueryParams(
        [("topic", t) for t in ([topics] if isinstance(topics, str) else topics)]
    )
    own = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(10, read=None))
    delay = retry
    try:
        while True:
            text = {**_auth(token), "Accept": "text/event-stream", "Cache-Control": "no-store"}
            headers = [(name.encode(), value.encode()) for name, value in text.items()]
            if last_event_id:
                # In UTF-8, as browsers send it: httpx refuses a non-ASCII str header value.
                headers.append((b"Last-Event-ID", last_event_id.encode("utf-8")))
            try:
                async with http.stream("GET", url, params=params, headers=headers) as answer:
                    if 400 <= answer.status_code < 500:
                        body = (await answer.aread()).decode("utf-8", "replace").strip()
                        raise HubRefused(answer.status_code, body)
                    if answer.is_error:
                        await answer.aread()  # the reason, for whoever reports the error
                    answer.raise_for_status()
                    kind = answer.headers.get("content-type", "")
                    if answer.status_code != 200 or not _is_stream(kind):
                        raise NotAStream(answer.status_code, kind)  # HTML: fail, never retry
                    retry_first = True  # connected once: from now on, always resume
                    delay = retry
                    gap_said = False
                    said = answer.headers.get("last-event-id")
                    if last_event_id and said is not None and said != last_event_id:
                        gap_said = True
                        yield Gap(last_event_id, None, f"the hub answered Last-Event-ID: {said}")
                    decoder = Decoder()
                    async for chunk in answer.aiter_bytes():
                        for event in decoder.feed(chunk):
                            if event.event == GAP_EVENT:
                                if not gap_said:
                                    yield _gap(event, last_event_id)
                                continue
                            if event.id:
                                last_event_id = event.id
                            yield event
                        if decoder.retry is not None:
                            delay = retry = decoder.retry / 1000
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if not retry_first:
                    raise
                log.info("hub connection lost (%s); resuming in %.1fs", exc, delay)
            if not reconnect:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_retry)
    finally:
        if own:
            await http.aclose()


def _gap(event: ServerEvent, requested: str | None) -> Gap:
    try:
        notice = json.loads(event.data)
    except ValueError:
        notice = {}
    return Gap(
        str(notice.get("requested", requested or "")),
        notice.get("replayFrom"),
        str(notice.get("reason", "history no longer holds the requested id")),
    )


__all__ = [
    "EARLIEST",
    "NO_RETRIES",
    "AsyncPublisher",
    "Gap",
    "HubClientError",
    "HubRefused",
    "HubUnavailable",
    "Publisher",
    "Retries",
    "publish",
    "subscribe",
]
