"""Hostile tokens: every token fault is a 401 (or 403) with a one-line reason, and nothing a
token carries reaches a response header unsanitised, on both faces."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
from collections.abc import Iterator

import pytest

from .support import HUB, KEY, HubProcess, free_port, raw_request, serve_process, start_hub

INJECTED = "\r\nX-Injected: yes\r\nSet-Cookie: stolen=1"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(header: dict[str, object], claims: object, key: bytes = KEY.encode()) -> str:
    """A token with any header at all, HMAC-signed the way PyJWT would (PyJWT refuses to
    make some of these)."""
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return signing + "." + b64(hmac.new(key, signing.encode(), hashlib.sha256).digest())


SUBSCRIBE_ALL = {"mercure": {"subscribe": ["*"], "publish": ["*"]}}
HOSTILE = {
    "alg": hs256({"alg": "HS256" + INJECTED, "typ": "JWT"}, SUBSCRIBE_ALL),
    "crit": hs256({"alg": "HS256", "crit": ["x" + INJECTED]}, SUBSCRIBE_ALL),
}


def head_of(raw: bytes) -> tuple[int, list[str]]:
    head = raw.partition(b"\r\n\r\n")[0].decode("utf-8", "replace")
    status_line, *lines = head.split("\r\n")
    return int(status_line.split()[1]), lines


def assert_refused_without_injection(raw: bytes) -> None:
    status, lines = head_of(raw)
    assert status == 401, raw[:300]
    names = [line.partition(":")[0].lower() for line in lines]
    assert "x-injected" not in names
    assert "set-cookie" not in names
    challenge = [line for line in lines if line.lower().startswith("www-authenticate:")]
    assert len(challenge) == 1
    assert 'error="invalid_token"' in challenge[0]


def subscribe_with(port: int, token: str) -> bytes:
    target = f"{HUB}?topic=t&authorization={token}"
    return raw_request(
        port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )


@pytest.fixture(scope="module")
def hub() -> Iterator[HubProcess]:
    h = start_hub("--no-demo", "--heartbeat", "0")
    yield h
    h.stop()


@pytest.mark.parametrize("field", sorted(HOSTILE))
def test_token_header_fields_cannot_split_the_response(hub: HubProcess, field: str) -> None:
    assert_refused_without_injection(subscribe_with(hub.port, HOSTILE[field]))


@pytest.fixture(scope="module")
def asgi_hub() -> Iterator[HubProcess]:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "tests.asgi_app:app", "--port", str(port)]
    h = serve_process(
        [*cmd, "--log-level", "warning"], port, {**os.environ, "SSEHUB_TEST_KEY": KEY}
    )
    yield h
    h.stop()


@pytest.mark.parametrize("field", sorted(HOSTILE))
def test_asgi_face_refuses_the_same_tokens_with_401(asgi_hub: HubProcess, field: str) -> None:
    assert_refused_without_injection(subscribe_with(asgi_hub.port, HOSTILE[field]))
