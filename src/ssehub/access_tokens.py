"""Mercure 1.0 access tokens: RFC 9068 JWTs (``typ: at+jwt``) whose RFC 9396
``authorization_details`` say which actions a client may take on which topics.

The claims become the same selector strings the hub routes and authorizes with (see
``topics.matcher_selector``), so the engine never knows which dialect a grant came from.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt

from .mercure import DETAIL_TYPE
from .topics import EXACT, MATCH_TYPES, URLPATTERN, compile_pattern, matcher_selector

AT_JWT = "at+jwt"
# The short name is the draft's; the URL is what the reference hub's 1.0 releases mint.
DETAIL_TYPES = (DETAIL_TYPE, "mercure")
ACTIONS = ("publish", "subscribe")
MAX_DETAILS = 100
MAX_DETAIL_TOPICS = 100
MAX_PATTERN = 2048

Matcher = tuple[str, str]  # (match_type, match)


class DetailsError(ValueError):
    """Why a token's ``authorization_details`` cannot be acted on (the whole token fails)."""


@dataclass(frozen=True, slots=True)
class Grants:
    """What an access token's Mercure authorization details allow."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    payload: object = None


def is_access_token(header: Mapping[str, object]) -> bool:
    """Whether a JWS header names the RFC 9068 type (``at+jwt`` or its media type)."""
    typ = header.get("typ")
    return isinstance(typ, str) and typ.lower() in (AT_JWT, "application/" + AT_JWT)


def _matcher(entry: object, where: str) -> str:
    if not isinstance(entry, dict):
        raise DetailsError(f"{where} must be an object with a 'match' member")
    match = entry.get("match")
    match_type = entry.get("match_type", EXACT)
    if not isinstance(match, str) or not match:
        raise DetailsError(f"{where}.match must be a non-empty string")
    if match_type not in MATCH_TYPES:
        raise DetailsError(f"{where}.match_type must be 'exact' or 'urlpattern'")
    if len(match) > MAX_PATTERN:
        raise DetailsError(f"{where}.match is longer than {MAX_PATTERN} characters")
    if match_type == URLPATTERN and match != "*":
        try:
            compile_pattern(match)
        except ValueError:
            raise DetailsError(f"{where}.match is not a valid URL pattern") from None
    return matcher_selector(match_type, match)


def grants(details: object) -> Grants:
    """The grants of an ``authorization_details`` claim; DetailsError if any Mercure entry is
    invalid (no partial acceptance). Entries of other types are someone else's: ignored."""
    if details is None:
        return Grants((), ())
    if not isinstance(details, list):
        raise DetailsError("authorization_details must be an array")
    publish: list[str] = []
    subscribe: list[str] = []
    payload: object = None
    mine = 0
    for n, detail in enumerate(details):
        if not isinstance(detail, dict):
            raise DetailsError(f"authorization_details[{n}] must be an object")
        if detail.get("type") not in DETAIL_TYPES:
            continue
        mine += 1
        if mine > MAX_DETAILS:
            raise DetailsError(f"more than {MAX_DETAILS} Mercure authorization details")
        where = f"authorization_details[{n}]"
        actions = detail.get("actions")
        if not isinstance(actions, list) or not actions or not all(a in ACTIONS for a in actions):
            raise DetailsError(f"{where}.actions must be a non-empty subset of publish, subscribe")
        topics = detail.get("topics")
        if not isinstance(topics, list) or not topics:
            raise DetailsError(f"{where}.topics must be a non-empty array")
        if len(topics) > MAX_DETAIL_TOPICS:
            raise DetailsError(f"{where}.topics has more than {MAX_DETAIL_TOPICS} entries")
        selectors = [_matcher(t, f"{where}.topics[{i}]") for i, t in enumerate(topics)]
        if "publish" in actions:
            publish.extend(selectors)
        if "subscribe" in actions:
            subscribe.extend(selectors)
            if payload is None and detail.get("payload") is not None:
                payload = detail["payload"]  # the first subscribe detail's, as shown to peers
    return Grants(tuple(dict.fromkeys(publish)), tuple(dict.fromkeys(subscribe)), payload)


def _details(action: str, matchers: Iterable[str | Matcher], payload: object) -> dict[str, object]:
    topics = []
    for m in matchers:
        match_type, match = (EXACT, m) if isinstance(m, str) else m
        entry = {"match": match}
        if match_type != EXACT:
            entry["match_type"] = match_type
        topics.append(entry)
    detail: dict[str, object] = {"type": DETAIL_TYPE, "actions": [action], "topics": topics}
    if payload is not None:
        detail["payload"] = payload
    return detail


def mint_access_token(
    key: str,
    audience: str,
    *,
    publish: Iterable[str | Matcher] = (),
    subscribe: Iterable[str | Matcher] = (),
    issuer: str | None = None,
    subject: str | None = None,
    payload: object = None,
    expires_in: float = 3600,
    algorithm: str = "HS256",
    claims: Mapping[str, object] | None = None,
) -> str:
    """An RFC 9068 access token for a Mercure 1.0 hub whose resource identifier is
    ``audience``. Matchers are exact topics, or ``(match_type, match)`` pairs; ``claims``
    adds or overrides any claim (iss, sub, client_id…)."""
    now = int(time.time())
    body: dict[str, object] = {
        "aud": audience,
        "exp": int(now + expires_in),
        "iat": now,
        "jti": f"urn:uuid:{uuid.uuid4()}",
    }
    if issuer is not None:
        body["iss"] = issuer
    if subject is not None:
        body["sub"] = subject
    details = []
    if publish := list(publish):
        details.append(_details("publish", publish, None))
    if subscribe := list(subscribe):
        details.append(_details("subscribe", subscribe, payload))
    body["authorization_details"] = details
    body.update(claims or {})
    secret = Path(key[1:]).read_text() if key.startswith("@") else key  # as auth.signing_key
    return jwt.encode(body, secret, algorithm=algorithm, headers={"typ": AT_JWT})


__all__ = ["AT_JWT", "DETAIL_TYPE", "DetailsError", "Grants", "grants", "mint_access_token"]
