"""Hostile input and the hub's defences: every case checks the answer, its reason, and that a
control subscriber on the same hub kept receiving."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httptools
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .support import (
    HUB,
    HubProcess,
    SSEClient,
    check_stream_ends_and_resumes,
    http_server,
    iter_responses,
    make_token,
    raw_request,
    start_hub,
    wait_until,
)

BASE = ("--no-demo", "--heartbeat", "0")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Control:
    """A subscriber that must keep receiving whatever the test throws at the hub."""

    def __init__(self, hub: HubProcess) -> None:
        self.hub = hub
        self.topic = f"urn:control:{uuid.uuid4().hex[:8]}"
        self.sub = hub.subscribe(self.topic, token=make_token(subscribe=[]))
        assert self.sub.status == 200

    def still_receives(self) -> None:
        event_id = self.hub.publish(self.topic, "probe").text
        assert [e.id for e in self.sub.events(1)] == [event_id]


@pytest.fixture(scope="module")
def guarded() -> Iterator[HubProcess]:
    h = start_hub(
        *BASE,
        "--max-connections-per-ip",
        "200",
        "--head-timeout",
        "1",
        "--keep-alive-timeout",
        "1",
        "--max-topics",
        "5",
    )
    yield h
    h.stop()


@pytest.fixture(scope="module")
def control(guarded: HubProcess) -> Iterator[Control]:
    c = Control(guarded)
    yield c
    c.sub.close()


# -- JWT in full -------------------------------------------------------------------------------


def pem_pair(kind: str) -> tuple[bytes, bytes, str]:
    if kind == "RS256":
        private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
    elif kind == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem, kind


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_asymmetric_keys_from_pem_files(alg: str) -> None:
    private, public, _ = pem_pair(alg)
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as f:
        f.write(public)
        f.flush()
        h = start_hub(
            *BASE,
            "--jwt-algorithm",
            alg,
            "--publisher-jwt-key",
            f"@{f.name}",
            "--anonymous",
            key=None,
        )
        try:
            good = jwt.encode({"mercure": {"publish": ["*"]}}, private, algorithm=alg)
            assert h.publish("t", "x", token=good).status_code == 200
            forged = jwt.encode(
                {"mercure": {"publish": ["*"]}},
                "secret-0123456789-0123456789-xx",
                algorithm="HS256",
            )
            r = h.publish("t", "x", token=forged)
            assert r.status_code == 401
            assert f"accepts {alg}" in r.text
        finally:
            h.stop()


def test_hs_rs_confusion_is_refused() -> None:
    private, public, _ = pem_pair("RS256")
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as f:
        f.write(public)
        f.flush()
        # Even with HS256 allowed next to RS256, the public key never serves as an HMAC secret.
        h = start_hub(
            *BASE,
            "--jwt-algorithm",
            "RS256,HS256",
            "--publisher-jwt-key",
            f"@{f.name}",
            "--anonymous",
            key=None,
        )
        try:
            header = {"alg": "HS256", "typ": "JWT"}
            import base64
            import hashlib
            import hmac

            def b64(data: bytes) -> str:
                return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

            signing = (
                b64(json.dumps(header).encode())
                + "."
                + b64(json.dumps({"mercure": {"publish": ["*"]}}).encode())
            )
            mac = hmac.new(public, signing.encode(), hashlib.sha256).digest()
            r = h.publish("t", "x", token=signing + "." + b64(mac))
            assert r.status_code == 401
            assert "wrong algorithm family" in r.text
            good = jwt.encode({"mercure": {"publish": ["*"]}}, private, algorithm="RS256")
            assert h.publish("t", "x", token=good).status_code == 200
        finally:
            h.stop()


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[tuple[str, bytes, Path]]:
    private, public, _ = pem_pair("RS256")
    jwk = json.loads(
        jwt.algorithms.RSAAlgorithm.to_jwk(
            serialization.load_pem_public_key(public)  # type: ignore[arg-type]
        )
    )
    jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
    body = json.dumps({"keys": [jwk]}).encode()
    with http_server(body) as base, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "jwks.json"
        path.write_bytes(body)
        yield f"{base}/jwks.json", private, path


@pytest.mark.parametrize("where", ["url", "file"])
def test_jwks_by_url_and_file(jwks_server: tuple[str, bytes, Path], where: str) -> None:
    url, private, path = jwks_server
    spec = url if where == "url" else f"@{path}"
    h = start_hub(*BASE, "--jwt-algorithm", "RS256", "--jwt-key", spec, key=None)
    try:
        good = jwt.encode(
            {"mercure": {"publish": ["*"], "subscribe": ["*"]}},
            private,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        assert h.publish("t", "x", token=good).status_code == 200
        with h.subscribe("t", token=good) as sub:
            assert sub.status == 200
        unknown = jwt.encode(
            {"mercure": {"publish": ["*"]}}, private, algorithm="RS256", headers={"kid": "nope"}
        )
        r = h.publish("t", "x", token=unknown)
        assert (r.status_code, "'nope'" in r.text) == (401, True)
    finally:
        h.stop()


def test_time_audience_issuer_and_none(control: Control) -> None:
    h = start_hub(*BASE, "--jwt-leeway", "30", "--jwt-audience", "hub", "--jwt-issuer", "me")
    try:
        now = time.time()
        base = {"mercure": {"publish": ["*"]}, "aud": "hub", "iss": "me"}
        key = h.key

        def post(claims: dict[str, object], **header: str) -> httpx.Response:
            token = jwt.encode(claims, key, algorithm="HS256", headers=header or None)
            return h.publish("t", "x", token=token)

        assert post({**base, "exp": now - 10}).status_code == 200  # within the leeway
        r = post({**base, "exp": now - 60})
        assert (r.status_code, "expired" in r.text) == (401, True)
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        r = post({**base, "nbf": now + 120})
        assert (r.status_code, "not valid yet" in r.text) == (401, True)
        r = post({**base, "aud": "other"})
        assert (r.status_code, "audience" in r.text) == (401, True)
        r = post({**base, "iss": "them"})
        assert (r.status_code, "issuer" in r.text) == (401, True)
        unsigned = jwt.encode(base, None, algorithm="none")  # type: ignore[arg-type]
        r = h.publish("t", "x", token=unsigned)
        assert (r.status_code, "signed with 'none'" in r.text) == (401, True)
        r = h.publish("t", "x", token=jwt.encode(base, key, algorithm="HS512"))
        assert (r.status_code, "signed with 'HS512'" in r.text) == (401, True)
    finally:
        h.stop()
    control.still_receives()


def test_scope_and_missing_token_challenges(guarded: HubProcess, control: Control) -> None:
    r = httpx.post(guarded.url, data={"topic": "t"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="ssehub"'
    r = guarded.publish("urn:secret", "x", token=make_token(publish=["urn:public"]))
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert "'urn:secret'" in r.text
    with guarded.subscribe("t") as anonymous:
        assert anonymous.status == 401
    control.still_receives()


def test_custom_cookie_name() -> None:
    h = start_hub(*BASE, "--cookie-name", "hubToken")
    try:
        token = make_token(subscribe=[])
        with h.subscribe("t", headers={"Cookie": f"hubToken={token}"}) as sub:
            assert sub.status == 200
        with h.subscribe("t", headers={"Cookie": f"mercureAuthorization={token}"}) as sub:
            assert sub.status == 401
    finally:
        h.stop()


# -- CORS and CSRF ------------------------------------------------------------------------------


def test_cors_and_cookie_publish_origins() -> None:
    h = start_hub(
        *BASE,
        "--anonymous",
        "--cors-origins",
        "https://app.example",
        "--publish-origins",
        "https://app.example",
    )
    try:
        pre = httpx.options(
            h.url,
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        assert pre.headers["access-control-allow-credentials"] == "true"
        assert "authorization" in pre.headers["access-control-allow-headers"]
        bad = httpx.options(
            h.url,
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert (bad.status_code, "cors-origins" in bad.text) == (403, True)
        with h.subscribe("t", headers={"Origin": "https://app.example"}) as sub:
            assert sub.headers["access-control-allow-origin"] == "https://app.example"
            assert "last-event-id" in sub.headers["access-control-expose-headers"].lower()
        with h.subscribe("t", headers={"Origin": "https://evil.example"}) as sub:
            assert "access-control-allow-origin" not in sub.headers
        cookie = {"Cookie": f"mercureAuthorization={make_token(publish=['*'])}"}
        ok = httpx.post(
            h.url, data={"topic": "t"}, headers={**cookie, "Origin": "https://app.example"}
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        by_referer = httpx.post(
            h.url, data={"topic": "t"}, headers={**cookie, "Referer": "https://app.example/page"}
        )
        assert by_referer.status_code == 200
        evil = httpx.post(
            h.url, data={"topic": "t"}, headers={**cookie, "Origin": "https://evil.example"}
        )
        assert (evil.status_code, "publish-origins" in evil.text) == (403, True)
    finally:
        h.stop()


# -- limits ------------------------------------------------------------------------------------


def test_topics_per_subscription(guarded: HubProcess, control: Control) -> None:
    token = make_token(subscribe=[])
    with guarded.subscribe([f"t{i}" for i in range(6)], token=token) as sub:
        assert (sub.status, b"too many topics" in sub.body) == (400, True)
    control.still_receives()


HEALTH_THEN_CLOSE = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def test_connections_per_address() -> None:
    """Over real sockets: the count follows the kernel's accepts and closes (the limits'
    arithmetic, and --max-connections, are in test_protocol)."""
    h = start_hub(*BASE, "--anonymous", "--max-connections-per-ip", "3")
    try:
        held = [socket.create_connection(("127.0.0.1", h.port), timeout=10) for _ in range(3)]
        for s in held:  # answered, so accepted and counted
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
        refused = raw_request(h.port, HEALTH_THEN_CLOSE)
        assert refused.startswith(b"HTTP/1.1 429 ")
        assert b"Retry-After: 1" in refused
        assert b"too many connections from 127.0.0.1 (at most 3)\n" in refused
        for s in held:
            s.close()
        # Once the hub has seen them go, the address is welcome again.
        wait_until(
            lambda: raw_request(h.port, HEALTH_THEN_CLOSE).startswith(b"HTTP/1.1 200 "),
            "a connection slot to free up",
        )
    finally:
        h.stop()


def open_sockets(pid: int) -> int:
    """How many sockets a process holds open."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(fd).startswith("socket:")
    return count


def test_a_flood_of_refused_connections_holds_few_sockets() -> None:
    """Refusals (503 here) are not counted as connections, so the ones held open after their
    answer (lest a reset overtake it) are bounded apart: a tenth of --max-connections."""
    h = start_hub(*BASE, "--anonymous", "--max-connections", "10")
    flood: list[socket.socket] = []
    try:
        held = [socket.create_connection(("127.0.0.1", h.port), timeout=10) for _ in range(10)]
        for s in held:  # answered, so accepted and counted
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
        before = open_sockets(h.proc.pid)
        for _ in range(30):  # each is answered and ended, and stays open on the client's side
            s = socket.create_connection(("127.0.0.1", h.port), timeout=10)
            flood.append(s)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert open_sockets(h.proc.pid) <= before + 1
    finally:
        for s in flood:
            s.close()
        h.stop()


def test_slowloris_and_idle_keep_alive(guarded: HubProcess, control: Control) -> None:
    slow = socket.create_connection(("127.0.0.1", guarded.port))
    slow.sendall(b"POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    idle = socket.create_connection(("127.0.0.1", guarded.port))
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    silent = socket.create_connection(("127.0.0.1", guarded.port))
    for s in (slow, idle, silent):
        s.settimeout(5)
    control.still_receives()
    answer = b""
    while chunk := slow.recv(4096):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"within 1s" in answer
    assert idle.recv(4096).startswith(b"HTTP/1.1 200 ")
    assert idle.recv(4096) == b""  # closed after the keep-alive timeout
    assert silent.recv(4096) == b""
    control.still_receives()


def test_write_timeout_ends_streams_which_resume() -> None:
    h = start_hub(*BASE, "--anonymous", "--write-timeout", "1")
    try:
        check_stream_ends_and_resumes(h)
    finally:
        h.stop()


def test_dispatch_timeout_closes_a_reader_that_stopped() -> None:
    h = start_hub(*BASE, "--anonymous", "--dispatch-timeout", "1")
    try:
        with h.subscribe("t", rcvbuf=4096) as stuck, h.subscribe("t") as fine:
            control = Control(h)
            with httpx.Client() as client:
                for _i in range(400):  # ~800 KiB: past the kernel buffers, under 1 MiB
                    client.post(
                        h.url,
                        data={"topic": "t", "data": "x" * 2000},
                        headers={"Authorization": f"Bearer {h.publisher_token}"},
                    )
            fine.events(400)
            # Not reading from ``stuck`` meanwhile: reading is progress, and would save it.
            h.wait_metric("ssehub_slow_consumers_closed_total", 1)
            assert stuck.wait_closed()
            control.still_receives()
    finally:
        h.stop()


# -- injection and garbage ---------------------------------------------------------------------


def test_sse_injection_is_refused_or_neutralised(guarded: HubProcess, control: Control) -> None:
    for field, value in [
        ("id", "x\r\nevent: evil"),
        ("id", "x\x00"),
        ("type", "a\nb"),
        ("retry", "1\n2"),
    ]:
        r = guarded.publish(control.topic, "x", **{field: value})
        assert r.status_code == 400, (field, value)
        assert field in r.text
    event_id = guarded.publish(control.topic, "x\nevent: evil\r\nid: forged\n\ndata: y").text
    [event] = control.sub.events(1)
    assert (event.id, event.event) == (event_id, "message")
    assert event.data == "x\nevent: evil\nid: forged\n\ndata: y"
    control.still_receives()


class _Framing:
    """httptools callbacks that note whether a whole request was read."""

    def __init__(self) -> None:
        self.complete = False

    def on_message_complete(self) -> None:
        self.complete = True


def expected_outcome(data: bytes) -> str:
    """What the hub must do with ``data`` sent then half-closed: parse it as the hub does.

    "answer": a complete request or a framing error, so there is an answer. "silence": an
    unfinished request, which the client abandoned, so the hub just closes."""
    framing = _Framing()
    try:
        httptools.HttpRequestParser(framing).feed_data(data)
    except httptools.HttpParserError:  # HttpParserUpgrade included: refused too
        return "answer"
    return "answer" if framing.complete else "silence"


JUNK = st.binary(min_size=1, max_size=600) | st.builds(
    lambda junk, path: f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n".encode() + junk,
    st.binary(max_size=200),
    st.sampled_from([HUB, "/", "//", "/%00", "*"]),
)


def test_random_bytes_never_hurt_the_hub(guarded: HubProcess, control: Control) -> None:
    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(JUNK)
    def one(junk: bytes) -> None:
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := s.recv(65536):
                    answer += chunk
        if not answer:  # fine for an unfinished request the client gave up on, only
            assert expected_outcome(junk) == "silence", "a request the hub read got no answer"
            return
        status, _, body = next(iter_responses(answer))
        assert status in (400, 401, 404, 405, 408, 413, 414, 415, 431), answer[:200]
        assert body.endswith(b"\n") and body.count(b"\n") == 1, answer[:200]  # one line

    one()
    control.still_receives()  # in the same test: it holds whatever order tests run in


def test_connection_churn_and_stopped_readers_keep_memory_bounded(
    guarded: HubProcess, control: Control
) -> None:
    pid = guarded.proc.pid
    before = rss_kib(pid)
    subscribers = guarded.metric("ssehub_subscribers")
    token = make_token(subscribe=[])
    for _ in range(4):
        socks = []
        for _ in range(150):
            s = socket.create_connection(("127.0.0.1", guarded.port))
            s.sendall(
                f"GET {HUB}?topic=churn HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
            )
            socks.append(s)
        for _i in range(20):
            guarded.publish("churn", "y" * 1000)
        for s in socks:
            s.close()
        control.still_receives()
    stalled = [
        SSEClient(
            guarded.port, f"{HUB}?topic=churn", {"Authorization": f"Bearer {token}"}, rcvbuf=4096
        )
        for _ in range(20)
    ]
    for _ in range(50):
        guarded.publish("churn", "z" * 2000)
    control.still_receives()
    for client in stalled:
        client.close()
    wait_until(
        lambda: guarded.metric("ssehub_subscribers") <= subscribers, "the hub to forget them"
    )
    grown = rss_kib(pid) - before
    assert grown < 40_000, f"RSS grew by {grown} KiB"


# -- drain --------------------------------------------------------------------------------------


def test_sigterm_drains_and_exits_zero() -> None:
    h = start_hub(*BASE, "--anonymous", "--shutdown-timeout", "5")
    with h.subscribe("t") as sub:
        event_id = h.publish("t", "before").text
        assert [e.id for e in sub.events(1)] == [event_id]
        os.kill(h.proc.pid, signal.SIGTERM)
        assert sub.wait_closed()  # ended cleanly, not left hanging
        assert h.proc.wait(30) == 0
