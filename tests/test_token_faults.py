"""Hostile tokens: every token fault is a 401 (or 403) with a one-line reason, and nothing a
token carries reaches a response header unsanitised, on both faces."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssehub.auth import Authenticator, Carrier, Token, find_token
from ssehub.errors import HubError

from .support import (
    HUB,
    KEY,
    HubProcess,
    free_port,
    http_server,
    raw_request,
    serve_process,
    start_hub,
)

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


# -- JWKS with several algorithm families -----------------------------------------------------


@pytest.fixture(scope="module")
def jwks_hub() -> Iterator[tuple[HubProcess, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = []
    for kid, key, alg in (("r", rsa_key, "RS256"), ("e", ec_key, "ES256")):
        jwk = json.loads(jwt.get_algorithm_by_name(alg).to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "jwks.json"
        path.write_text(json.dumps({"keys": keys}))
        h = start_hub(
            "--no-demo",
            "--heartbeat",
            "0",
            "--jwt-algorithm",
            "RS256,ES256,HS256",
            "--jwt-key",
            f"@{path}",
            key=None,
        )
        yield h, rsa_key, ec_key
        h.stop()


def test_alg_that_does_not_fit_its_jwks_key_is_a_401(
    jwks_hub: tuple[HubProcess, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey],
) -> None:
    h, rsa_key, ec_key = jwks_hub
    claims = {"mercure": {"publish": ["*"]}}
    mismatched = [
        hs256({"alg": "HS256", "kid": "r"}, claims, b"any secret"),
        jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "r"}),
        jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "e"}),
    ]
    for token in mismatched:
        r = h.publish("t", "x", token=token)
        assert r.status_code == 401, r.text
        assert "does not fit its key" in r.text
    good = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "e"})
    assert h.publish("t", "x", token=good).status_code == 200


def test_kid_that_is_not_a_string_is_a_401(
    jwks_hub: tuple[HubProcess, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey],
) -> None:
    h, rsa_key, _ = jwks_hub
    token = jwt.encode({"mercure": {"subscribe": ["*"]}}, rsa_key, algorithm="RS256")
    rest = token.partition(".")[2]
    for kid in (["r"], {"k": 1}, 7):
        forged = b64(json.dumps({"alg": "RS256", "kid": kid}).encode()) + "." + rest
        r = h.publish("t", "x", token=forged)
        assert r.status_code == 401, r.text
    forged = b64(json.dumps({"alg": "RS256", "kid": "r" + INJECTED}).encode()) + "." + rest
    assert_refused_without_injection(subscribe_with(h.port, forged))


# -- every fault of a hostile token, in process ------------------------------------------------

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())
_ED = ed25519.Ed25519PrivateKey.generate()
_SECRET = b"s" * 32
_SIGNERS: dict[str, tuple[str, object]] = {
    "r": ("RS256", _RSA),
    "e": ("ES256", _EC),
    "d": ("EdDSA", _ED),
    "h": ("HS256", _SECRET),
}
_ALGS = ["RS256", "ES256", "HS256", "EdDSA", "PS256", "none", "HS256" + INJECTED]


@pytest.fixture(scope="module")
def jwks_authenticator() -> Iterator[Authenticator]:
    keys = []
    for kid, (alg, key) in _SIGNERS.items():
        public = key if isinstance(key, bytes) else key.public_key()  # type: ignore[attr-defined]
        keys.append({**json.loads(jwt.get_algorithm_by_name(alg).to_jwk(public)), "kid": kid})
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"keys": keys}, f)
    try:
        yield Authenticator(f"@{f.name}", f"@{f.name}", "RS256,ES256,HS256,PS256,EdDSA", leeway=5)
    finally:
        os.unlink(f.name)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(_ALGS + list(_SIGNERS) + ["*", INJECTED]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(_ALGS) | json_values,
        "kid": st.sampled_from(list(_SIGNERS)) | json_values,
        "crit": json_values,
        "b64": json_values,
        "typ": json_values,
    },
)
claims = (
    st.fixed_dictionaries(
        {},
        optional={
            name: json_values
            for name in ("exp", "nbf", "iat", "aud", "iss", "sub", "jti", "mercure")
        },
    )
    | json_values
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(header=headers, payload=claims, signer=st.sampled_from(sorted(_SIGNERS)))
def test_any_hostile_token_is_refused_with_a_reason(
    jwks_authenticator: Authenticator, header: dict[str, object], payload: object, signer: str
) -> None:
    alg, key = _SIGNERS[signer]
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    token = signing + "." + b64(jwt.get_algorithm_by_name(alg).sign(signing.encode(), key))
    found = Token(token, Carrier.QUERY)
    for kind in ("subscriber", "publisher"):
        refusal = None
        try:
            if kind == "subscriber":
                jwks_authenticator.subscriber(found, anonymous=False)
            else:
                jwks_authenticator.publisher(found, ["urn:t"])
        except HubError as error:  # anything else fails the test: no answer, a traceback
            refusal = error
        if refusal is not None:
            assert refusal.status in (401, 403)
            assert refusal.reason
            assert not any(ord(c) < 0x20 for c in refusal.reason)
            for _, value in refusal.headers:
                assert not any(ord(c) < 0x20 and c != "\t" for c in value), value


# -- CORS wildcards ----------------------------------------------------------------------------


def test_cors_wildcard_answers_star_without_credentials() -> None:
    h = start_hub("--no-demo", "--anonymous", "--cors-origins", "*,https://app.example")
    try:
        for origin in ("https://evil.example", "null"):
            with h.subscribe("t", headers={"Origin": origin}) as sub:
                assert sub.status == 200
                assert sub.headers["access-control-allow-origin"] == "*"
                assert "access-control-allow-credentials" not in sub.headers
            pre = httpx.options(
                h.url, headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
            )
            assert pre.status_code == 204
            assert pre.headers["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in pre.headers
        # An origin listed by name still gets credentials, echoed.
        with h.subscribe("t", headers={"Origin": "https://app.example"}) as sub:
            assert sub.headers["access-control-allow-origin"] == "https://app.example"
            assert sub.headers["access-control-allow-credentials"] == "true"
    finally:
        h.stop()


def test_publish_origins_wildcard_is_refused_at_start() -> None:
    with pytest.raises(RuntimeError, match="publish-origins"):
        start_hub("--no-demo", "--publish-origins", "*").stop()


# -- reasons echo what the request carried: bounded ----------------------------------------------


def test_reasons_that_quote_the_request_stay_short(hub: HubProcess) -> None:
    """A 403 quotes the topic a token does not cover, in the body and in WWW-Authenticate;
    a 100 KB topic must not become a 100 KB header (proxies drop such answers)."""
    narrow = jwt.encode({"mercure": {"publish": ["urn:mine"]}}, KEY, algorithm="HS256")
    r = hub.publish("urn:" + "x" * 100_000, "x", token=narrow)
    assert r.status_code == 403
    assert "does not cover topic 'urn:xxx" in r.text
    assert len(r.headers["www-authenticate"]) < 1000
    assert len(r.content) < 1000


def test_huge_token_is_refused_before_decoding_on_both_faces(
    hub: HubProcess, asgi_hub: HubProcess
) -> None:
    """Both faces bound the head (431, --max-head-size: the ASGI face checks the scope);
    past a raised head bound the token itself is bounded: a 20 KB token is a 401 that says
    so, on whichever carrier."""
    claims = {"mercure": {"publish": ["*"]}, "pad": "x" * 20_000}
    token = jwt.encode(claims, KEY, algorithm="HS256")
    for face in (asgi_hub, hub):
        r = face.publish("urn:t", "x", token=token)
        assert r.status_code == 431
        assert "request head too large" in r.text
    for carrier in (f"Bearer {token}", None):
        with pytest.raises(HubError, match="longer than 16384 characters") as refused:
            find_token(carrier, None if carrier else token, None)
        assert refused.value.status == 401


def test_oversized_jwks_answer_is_not_loaded() -> None:
    """A JWKS URL is read up to 1 MiB: a larger answer is refused, not held."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(private.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1"}], "pad": " " * (2 << 20)}).encode()
    with http_server(body) as base:
        url = f"{base}/jwks.json"
        # At start the key set must load, so the hub says why it cannot, in one line.
        with pytest.raises(RuntimeError, match="larger than 1048576 bytes") as refused:
            start_hub("--no-demo", "--jwt-algorithm", "RS256", "--jwt-key", url, key=None)
        assert "Traceback" not in str(refused.value)


def test_event_source_response_headers_cannot_be_split(asgi_hub: HubProcess) -> None:
    """EventSourceResponse (an app's own stream) cleans its header values too."""
    query = "text=" + quote("note" + INJECTED)
    raw = raw_request(
        asgi_hub.port,
        f"GET /note?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    status, lines = head_of(raw)
    assert status == 200, raw[:300]
    names = [line.partition(":")[0].lower() for line in lines]
    assert "x-injected" not in names
    assert "set-cookie" not in names
    assert "x-note" in names


def test_remembered_tokens_are_bounded_by_size() -> None:
    """Verified tokens are remembered to skip the signature next time; long ones (a big
    mercure.payload, up to 16 KiB) must not let that memory grow to 4096 x 16 KiB."""
    auth = Authenticator(KEY, KEY)
    total = 0
    for n in range(600):
        claims = {"mercure": {"subscribe": ["*"], "payload": {"n": n, "pad": "x" * 15_000}}}
        token = jwt.encode(claims, KEY, algorithm="HS256")
        total += len(token)
        assert auth.subscriber(Token(token, Carrier.COOKIE), anonymous=False) is not None
    assert total > 2 * (4 << 20)
    assert 0 < auth.cached_chars <= 4 << 20


@pytest.mark.parametrize("size", [100, 5000])  # a header read once and kept, or every time
def test_an_authorization_header_reads_the_same_every_time(size: int) -> None:
    token = "t" * size
    for _ in range(2):
        assert find_token(f" Bearer  {token} ", None, None) == Token(token, Carrier.HEADER)
        for bad in (f"Basic {token}", "Bearer ", "Bearer"):
            with pytest.raises(HubError, match="must be 'Bearer <token>'") as refused:
                find_token(bad + " " * (size - len(bad)), None, None)
            assert refused.value.status == 401
