"""Mercure requests, sans-I/O: a publish form or a subscribe query in, typed values out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

from .errors import HubError
from .events import Event
from .sse import encode_event

HUB_PATH = "/.well-known/mercure"
EARLIEST = "earliest"
"""The resume point before every retained event (``lastEventID=earliest``); never an id."""
LINK = f'<{HUB_PATH}>; rel="mercure"'
GAP_EVENT = "ssehub.gap"
FORM = "application/x-www-form-urlencoded"
_MAX_FIELDS = 1000
MAX_ID_BYTES = 1024  # an id must fit back into a Last-Event-ID header, far under any head limit


@dataclass(frozen=True, slots=True)
class Subscription:
    """A parsed subscribe request."""

    topics: tuple[str, ...]
    last_event_id: str | None
    authorization: str | None


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def _fields(text: str, what: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=_MAX_FIELDS)
    except UnicodeDecodeError:
        raise HubError(400, f"{what} holds percent-encoded bytes that are not UTF-8") from None
    except ValueError:
        raise HubError(400, f"{what} has more than {_MAX_FIELDS} fields") from None


def parse_publish(body: bytes, content_type: str | None) -> Event:
    """Turn a publish request's body into an Event, or raise HubError with the reason."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != FORM:
        raise HubError(415, f"publish with Content-Type: {FORM} (got {content_type or 'none'!r})")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HubError(400, "publish body is not valid UTF-8") from None
    topics: list[str] = []
    data: str | None = None
    private = False
    event_id = event_type = retry = None
    for name, value in _fields(text, "publish body"):
        if name == "topic":
            topics.append(value)
        elif name == "data":
            data = value if data is None else data + "\n" + value
        elif name == "private":
            private = True
        elif name == "id":
            event_id = value
        elif name == "type":
            event_type = value
        elif name == "retry":
            retry = value
    if not topics:
        raise HubError(400, "missing topic: a publish needs at least one topic field")
    if any(not t for t in topics):
        raise HubError(400, "empty topic: every topic field needs a value")
    problem = field_problem(event_id, event_type)
    if problem is not None:
        raise HubError(400, problem)
    retry_ms = None
    if retry is not None and retry != "":
        if not (retry.isascii() and retry.isdigit()) or len(retry) > 10:
            raise HubError(400, f"bad retry {retry!r}: give milliseconds as digits only")
        retry_ms = int(retry)
    return Event(tuple(topics), data or "", private, event_id or None, event_type or None, retry_ms)


def field_problem(event_id: str | None, event_type: str | None) -> str | None:
    """Why an id or a type could not go out on a stream and come back, if it could not."""
    if event_id is not None:
        if event_id.startswith("#"):
            return "bad id: an id must not start with '#'"
        if _has_control(event_id):
            return "bad id: an id must not contain control characters"
        if event_id != event_id.strip(" "):
            # HTTP trims spaces around a header value: no client could resume from this id.
            return "bad id: an id must not start or end with a space (Last-Event-ID trims it)"
        if len(event_id.encode("utf-8")) > MAX_ID_BYTES:
            return f"bad id: longer than {MAX_ID_BYTES} bytes"
        if event_id == EARLIEST:
            return f"bad id: {EARLIEST!r} is reserved"
    if event_type is not None and _has_control(event_type):
        return "bad type: a type must not contain control characters"
    return None


def parse_subscribe(query: str, last_event_id_header: str | None, max_topics: int) -> Subscription:
    """Read the ``topic`` selectors, the resume point and a query token from a subscribe URL.

    The Last-Event-ID header wins over the ``lastEventID`` query parameter.
    """
    topics: list[str] = []
    last_event_id = authorization = None
    for name, value in _fields(query, "query string"):
        if name == "topic":
            topics.append(value)
        elif name == "lastEventID":
            last_event_id = value
        elif name == "authorization":
            authorization = value
    if not topics:
        raise HubError(400, "missing topic: subscribe with at least one topic query parameter")
    if len(topics) > max_topics:
        raise HubError(400, f"too many topics: {len(topics)} given, at most {max_topics}")
    if last_event_id_header:
        last_event_id = last_event_id_header
    return Subscription(tuple(dict.fromkeys(topics)), last_event_id or None, authorization)


def query_token(query: str) -> str | None:
    """The ``authorization`` query parameter, if any (a publisher may send one too)."""
    if "authorization=" not in query:
        return None
    for name, value in _fields(query, "query string"):
        if name == "authorization":
            return value
    return None


def gap_notice(requested: str, first: str | None) -> bytes:
    """The named event that starts a stream whose resume point history no longer holds;
    ``first`` is the id replay starts from, if any.

    It carries no id, so a browser's lastEventId is untouched until the replay's first event.
    """
    body = {
        "requested": requested,
        "replayFrom": first,
        "reason": "the requested id is not in history: events after it may be lost",
    }
    return encode_event(json.dumps(body, separators=(",", ":")), event=GAP_EVENT)


def live_gap_notice(resumed_at: str | None, missed: int | None) -> bytes:
    """The named event that tells live subscribers this node missed events of the shared
    stream (it fell further behind than the stream keeps). No ``requested``: each subscriber
    knows its own last id; no id, so a browser's lastEventId stays the last event it had.
    ``resumed_at`` is None for a subscriber that may not see the event after the gap."""
    body = {
        "replayFrom": resumed_at,
        "missed": missed,
        "reason": "this hub node fell behind the shared stream: events before replayFrom "
        "may be lost",
    }
    return encode_event(json.dumps(body, separators=(",", ":")), event=GAP_EVENT)
