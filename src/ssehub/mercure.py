"""Mercure requests, sans-I/O: a publish form or a subscribe query in, typed values out."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urljoin, urlsplit

from .errors import HubError
from .events import Event
from .sse import encode_event
from .topics import EXACT, URLPATTERN, matcher_selector

HUB_PATH = "/.well-known/mercure"
EARLIEST = "earliest"
"""The resume point before every retained event (``lastEventID=earliest``); never an id."""
LINK = f'<{HUB_PATH}>; rel="mercure"'
GAP_EVENT = "ssehub.gap"
FORM = "application/x-www-form-urlencoded"
_MAX_FIELDS = 1000
MAX_ID_BYTES = 1024  # an id must fit back into a Last-Event-ID header, far under any head limit

DIALECT_0 = "0.x"  # draft-07: topic=, lastEventID, the mercure claim
DIALECT_1 = "1.0"  # draft-08: match=, match_urlpattern=, last_event_id, at+jwt tokens
DIALECTS = (DIALECT_0, DIALECT_1)
RESUMED_HEADER = {DIALECT_0: "Last-Event-ID", DIALECT_1: "Mercure-Last-Event-ID"}
# 1.0 subscribe parameters naming a matcher type; the rest of the match* namespace is reserved.
MATCH_PARAMS = {"match": EXACT, "match_exact": EXACT, "match_urlpattern": URLPATTERN}
DETAIL_TYPE = "https://mercure.rocks/authorization-detail"  # RFC 9396 type of 1.0 grants
METADATA_PATH = "/.well-known/oauth-protected-resource" + HUB_PATH  # RFC 9728, section 3.1


@dataclass(frozen=True, slots=True)
class Subscription:
    """A parsed subscribe request.

    ``topics`` are the engine's selector strings; for a 1.0 request ``matchers`` holds the
    ``(match_type, match)`` each came from, in the same order."""

    topics: tuple[str, ...]
    last_event_id: str | None
    authorization: str | None
    dialect: str = DIALECT_0
    matchers: tuple[tuple[str, str], ...] = ()


def invalid_request(reason: str) -> HubError:
    """400 with an RFC 6750 ``invalid_request`` challenge (a malformed authorized request)."""
    quoted = reason.replace("\\", "\\\\").replace('"', "'")
    challenge = f'Bearer realm="ssehub", error="invalid_request", error_description="{quoted}"'
    return HubError(400, reason, (("WWW-Authenticate", challenge),))


# One regex scan, not a Python step per character: these run on every publish's topics.
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_CONTROL_1 = re.compile("[\x00-\x1f\x7f-\x9f]")


def _has_control_1(text: str) -> bool:
    """C0, DEL and C1: what draft-08 forbids in topics and matchers."""
    return _CONTROL_1.search(text) is not None


def request_dialect(query: str) -> str | None:
    """Which dialect a subscribe query speaks: ``topic`` is 0.x, the ``match`` namespace 1.0
    (None when it names neither; 400 when it mixes them)."""
    zero = one = False
    for name, _ in _fields(query, "query string"):
        if name == "topic":
            zero = True
        elif name.lower().startswith("match"):
            one = True
    if zero and one:
        raise HubError(
            400,
            "mixed dialects: topic= is Mercure 0.x and match= is Mercure 1.0; use one of them",
        )
    return DIALECT_1 if one else DIALECT_0 if zero else None


def reserved_topic(topic: str, base: str) -> bool:
    """Whether a topic, resolved against the hub's URL, names the hub's own namespace."""
    try:
        path = urlsplit(urljoin(base, topic)).path
    except ValueError:
        return False
    return path == HUB_PATH or path.startswith(HUB_PATH + "/")


def check_publish_1(event: Event, base: str) -> None:
    """Draft-08's extra rules on a publish: no control characters in topics, none in the
    hub's reserved namespace (403: subscription events are the hub's alone)."""
    for topic in event.topics:
        if _has_control_1(topic):
            raise HubError(400, "bad topic: a topic must not contain control characters")
        if reserved_topic(topic, base):
            raise HubError(403, f"topic {topic[:100]!r} is in the hub's reserved namespace")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _fields(text: str, what: str) -> list[tuple[str, str]]:
    """``parse_qsl(text, keep_blank_values=True, errors="strict")`` with its field bound, at
    a fraction of its cost: it runs on every publish body, whose fields are mostly plain."""
    if not text:
        return []
    if text.count("&") >= _MAX_FIELDS:
        raise HubError(400, f"{what} has more than {_MAX_FIELDS} fields")
    fields = []
    try:
        for field in text.split("&"):
            if field:
                name, _, value = field.partition("=")
                fields.append((_unquote(name), _unquote(value)))
    except UnicodeDecodeError:
        raise HubError(400, f"{what} holds percent-encoded bytes that are not UTF-8") from None
    return fields


def _unquote(text: str) -> str:
    """A form field's name or value: ``+`` is a space, ``%XX`` a UTF-8 byte (strictly)."""
    if "+" in text:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    if len(text) <= _CACHED_LENGTH:
        return _unquote_short(text)
    return unquote(text, errors="strict")


_CACHED_LENGTH = 256  # names and topics: the same few come again on every publish


@lru_cache(maxsize=1024)
def _unquote_short(text: str) -> str:
    return unquote(text, errors="strict")


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
    if not all(topics):
        raise HubError(400, "empty topic: every topic field needs a value")
    if any(map(_CONTROL.search, topics)):
        # Never a valid IRI, and the selector marks of 1.0 matchers start with NUL.
        raise HubError(400, "bad topic: a topic must not contain control characters")
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


def parse_subscribe(
    query: str,
    last_event_id_header: str | None,
    max_topics: int,
    dialects: tuple[str, ...] = DIALECTS,
) -> Subscription:
    """Read a subscribe URL in the dialect it speaks (``topic`` for 0.x, ``match`` for 1.0).

    The Last-Event-ID header wins over the query's resume point in both dialects.
    """
    dialect = request_dialect(query)
    if dialect is not None and dialect not in dialects:
        other = DIALECT_1 if dialect == DIALECT_0 else DIALECT_0
        param = "match=" if other == DIALECT_1 else "topic="
        raise HubError(
            400,
            f"Mercure {dialect} subscriptions are turned off on this hub (--dialects): "
            f"subscribe with {param} (Mercure {other})",
        )
    if dialect == DIALECT_1:
        return _parse_subscribe_1(query, last_event_id_header, max_topics)
    if DIALECT_0 not in dialects:
        raise HubError(400, "missing match: subscribe with at least one match query parameter")
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
    if any(t.startswith("\x00") for t in topics):
        raise HubError(400, "bad topic selector: it must not start with a NUL character")
    if last_event_id_header:
        last_event_id = last_event_id_header
    return Subscription(tuple(dict.fromkeys(topics)), last_event_id or None, authorization)


def _parse_subscribe_1(
    query: str, last_event_id_header: str | None, max_topics: int
) -> Subscription:
    """Draft-08: ``match`` / ``match_urlpattern`` matchers and ``last_event_id``; a token
    in the query string is refused (RFC 9700), as the 1.0 reference hub does."""
    matchers: list[tuple[str, str]] = []
    last_event_id = None
    for name, value in _fields(query, "query string"):
        if name.lower().startswith("match"):
            match_type = MATCH_PARAMS.get(name)
            if match_type is None:
                raise HubError(
                    400,
                    f"unknown matcher parameter {name[:40]!r}: use match (exact) or "
                    "match_urlpattern",
                )
            if not value:
                raise HubError(400, f"empty {name}: every matcher needs a value")
            if _has_control_1(value):
                raise HubError(400, f"bad {name}: a matcher must not contain control characters")
            matchers.append((match_type, value))
        elif name == "last_event_id":
            last_event_id = value
        elif name in ("access_token", "authorization"):
            raise invalid_request(
                f"no token in the query string ({name}): Mercure 1.0 takes it in the "
                "Authorization header or the cookie"
            )
    if len(matchers) > max_topics:
        raise HubError(400, f"too many matchers: {len(matchers)} given, at most {max_topics}")
    unique = tuple(dict.fromkeys(matchers))
    if last_event_id_header:
        last_event_id = last_event_id_header
    return Subscription(
        tuple(matcher_selector(t, m) for t, m in unique),
        last_event_id or None,
        None,
        DIALECT_1,
        unique,
    )


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


def metadata_url(resource: str) -> str:
    """Where RFC 9728 puts the metadata of ``resource``: its path after the well-known
    prefix, on the same origin."""
    parts = urlsplit(resource)
    return f"{parts.scheme}://{parts.netloc}{METADATA_PATH.removesuffix(HUB_PATH)}{parts.path}"


def protected_resource_metadata(resource: str, cookie_name: str) -> dict[str, object]:
    """The hub's RFC 9728 protected resource metadata, as the 1.0 hub serves it: the
    header is the only RFC 6750 method (no query tokens); the cookie has its own member."""
    return {
        "resource": resource,
        "bearer_methods_supported": ["header"],
        "authorization_details_types_supported": [DETAIL_TYPE],
        "mercure_cookie": cookie_name,
    }


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
