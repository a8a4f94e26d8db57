"""HTTP/2 against a real hub: over TLS (ALPN h2, self-signed certificate made here) and h2c
with prior knowledge (``--http2``), driven by httpx's HTTP/2 client and by Chromium."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import re
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, DataReceived, StreamEnded, StreamReset

from .support import CHROMIUM, CHROMIUM_FLAGS, HUB, HubProcess, SSEClient, start_hub

TOPIC = "https://example.com/h2"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_hub(certificate: tuple[Path, Path]) -> Iterator[HubProcess]:
    certfile, keyfile = certificate
    h = start_hub("--certfile", str(certfile), "--keyfile", str(keyfile), "--anonymous")
    yield h
    h.stop()


@pytest.fixture(scope="module")
def h2c_hub() -> Iterator[HubProcess]:
    h = start_hub("--http2", "--anonymous")
    yield h
    h.stop()


def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))


async def fan_out_on_one_connection(client: httpx.AsyncClient, base: str, token: str) -> None:
    """Five streams and a publish on one HTTP/2 connection: every stream gets the event, and
    the hub counts one connection."""
    ready: list[asyncio.Event] = [asyncio.Event() for _ in range(5)]

    async def subscribe(number: int) -> str:
        async with client.stream("GET", base + HUB, params={"topic": TOPIC}) as answer:
            assert answer.http_version == "HTTP/2"
            assert answer.status_code == 200
            assert answer.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert "transfer-encoding" not in answer.headers  # no HTTP/1.1 framing on h2
            ready[number].set()
            async for line in answer.aiter_lines():
                if line.startswith("data: "):
                    return line[6:]
        raise AssertionError("the stream ended without an event")

    streams = [asyncio.create_task(subscribe(n)) for n in range(5)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
    published = await client.post(
        base + HUB,
        data={"topic": TOPIC, "data": "over h2"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert published.http_version == "HTTP/2"
    assert published.status_code == 200, published.text
    assert published.text.startswith("urn:uuid:")
    assert await asyncio.wait_for(asyncio.gather(*streams), 10) == ["over h2"] * 5
    metrics = await client.get(base + "/metrics")
    assert metric(metrics.text, "ssehub_connections") == 1


NEXT_HOPS = (
    "performance.getEntriesByType('navigation')"
    ".concat(performance.getEntriesByType('resource'))"
    ".map((e) => e.nextHopProtocol)"
)


def next_hop_protocols(page: Any) -> list[str]:
    """The protocol every request of a Chromium page went over ("h2", "http/1.1")."""
    protocols: list[str] = page.evaluate(NEXT_HOPS)
    return protocols


def test_h2_over_tls(tls_hub: HubProcess, certificate: tuple[Path, Path]) -> None:
    async def main() -> None:
        verify = trusting(certificate)
        async with httpx.AsyncClient(http2=True, verify=verify, timeout=10) as client:
            base = f"https://127.0.0.1:{tls_hub.port}"
            await fan_out_on_one_connection(client, base, tls_hub.publisher_token)

    asyncio.run(main())


def test_http11_over_tls_for_older_clients(
    tls_hub: HubProcess, certificate: tuple[Path, Path]
) -> None:
    base = f"https://127.0.0.1:{tls_hub.port}"
    with httpx.Client(http2=False, verify=trusting(certificate), timeout=10) as client:
        answer = client.get(base + "/healthz")
        assert (answer.http_version, answer.text) == ("HTTP/1.1", "ok\n")
        with client.stream("GET", base + HUB, params={"topic": TOPIC + "/1"}) as stream:
            assert stream.headers["transfer-encoding"] == "chunked"
            tls_hub_publish = httpx.post(
                base + HUB,
                data={"topic": TOPIC + "/1", "data": "over http/1.1"},
                headers={"Authorization": f"Bearer {tls_hub.publisher_token}"},
                verify=trusting(certificate),
            )
            assert tls_hub_publish.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    assert line == "data: over http/1.1"
                    break


def test_h2c_prior_knowledge(h2c_hub: HubProcess) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
            await fan_out_on_one_connection(client, h2c_hub.base, h2c_hub.publisher_token)

    asyncio.run(main())


def test_http11_still_served_on_an_h2c_port(h2c_hub: HubProcess) -> None:
    with h2c_hub.subscribe(TOPIC + "/2") as sub:
        assert sub.status == 200
        assert sub.headers["transfer-encoding"] == "chunked"
        h2c_hub.publish(TOPIC + "/2", "plain")
        assert [e.data for e in sub.events(1)] == ["plain"]


def test_h2_refusals_answer_on_their_stream(h2c_hub: HubProcess) -> None:
    """A refused request gets its status and one-line reason on its own stream; the
    connection and its other streams carry on."""

    async def main() -> None:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
            base = h2c_hub.base
            missing = await client.get(base + "/nowhere")
            assert missing.status_code == 404
            assert missing.text.startswith("no such path")
            unauthorized = await client.post(base + HUB, data={"topic": TOPIC, "data": "x"})
            assert unauthorized.status_code == 401
            big = await client.post(
                base + HUB,
                content=b"x" * (2 << 20),
                headers={"Authorization": f"Bearer {h2c_hub.publisher_token}"},
            )
            assert big.status_code == 413
            assert (await client.get(base + "/healthz")).status_code == 200
            metrics = await client.get(base + "/metrics")
            assert metric(metrics.text, "ssehub_connections") == 1

    asyncio.run(main())


class RawH2:
    """An HTTP/2 client on a socket (the sans-I/O ``h2`` library) that acknowledges the data
    of the streams it reads and never that of the others, so their windows close: the
    flow-control test needs that control, which httpx (16 MiB windows) does not give."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(1 << 24)  # the connection's window stays open
        self.body: dict[int, bytes] = {}
        self.reset: dict[int, int] = {}
        self.ended: set[int] = set()
        self.goaway: int | None = None
        self.reading: set[int] = set()
        self.terminated = False
        self.sock.sendall(self.h2.data_to_send())

    def get(self, path: str, read: bool) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        head = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")]
        self.h2.send_headers(stream_id, head, end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        self.body[stream_id] = b""
        if read:
            self.reading.add(stream_id)
        return stream_id

    def until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"not in time; resets {self.reset}"
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            assert data, "the hub closed the connection"
            for event in self.h2.receive_data(data):
                if isinstance(event, DataReceived):
                    assert event.data is not None
                    self.body[event.stream_id] = self.body.get(event.stream_id, b"") + event.data
                    if event.stream_id in self.reading:
                        self.h2.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                elif isinstance(event, StreamReset):
                    self.reset[event.stream_id] = event.error_code
                elif isinstance(event, StreamEnded):
                    assert not self.terminated, "a stream ended after GOAWAY"
                    self.ended.add(event.stream_id)
                elif isinstance(event, ConnectionTerminated):
                    self.terminated = True
                    self.goaway = event.error_code
            if not self.terminated:
                self.sock.sendall(self.h2.data_to_send())

    def close(self) -> None:
        self.sock.close()


def test_h2_stream_whose_window_stays_closed_is_reset_and_the_others_receive() -> None:
    """Flow control: a stream whose window stays closed backlogs on the hub, and past the
    bound it is reset as a slow consumer (RST_STREAM); its sibling on the same connection
    gets every event, and the connection lives on."""
    h = start_hub("--http2", "--anonymous", "--max-write-buffer", "100000")
    events, size = 40, 16_000
    topic = TOPIC + "/slow"
    path = HUB + "?" + urlencode({"topic": topic})
    client = RawH2(h.port)
    try:
        stalled = client.get(path, read=False)
        reader = client.get(path, read=True)
        client.until(lambda: client.body[stalled] != b"" and client.body[reader] != b"")
        for n in range(events):
            assert h.publish(topic, f"{n:05d}" + "y" * size).status_code == 200
            # The reader reads as it goes; the stalled one never does.
            client.until(lambda n=n: client.body[reader].count(b"\n\n") >= n + 1)  # type: ignore[misc]
        client.until(lambda: stalled in client.reset)
        assert client.reset[stalled] == ErrorCodes.CANCEL
        assert reader not in client.reset
        assert not client.terminated
        # The stalled stream got what its window allowed and no more.
        assert len(client.body[stalled]) <= 65_535
        got = client.body[reader].decode()
        assert [int(m) for m in re.findall(r"^data: (\d{5})", got, re.MULTILINE)] == list(
            range(events)
        )
        text = httpx.get(h.base + "/metrics").text
        assert metric(text, "ssehub_slow_consumers_closed_total") == 1
    finally:
        client.close()
        h.stop()


def test_drain_ends_h2_streams_cleanly_then_goaway() -> None:
    """SIGTERM: every HTTP/2 stream ends with END_STREAM (a clean end, not a reset), then
    GOAWAY with NO_ERROR, then the hub closes the connection."""
    h = start_hub("--http2", "--anonymous")
    client = RawH2(h.port)
    try:
        path = HUB + "?" + urlencode({"topic": TOPIC})
        streams = [client.get(path, read=True) for _ in range(3)]
        client.until(lambda: all(client.body[s] == b":\n" for s in streams))
        h.proc.send_signal(signal.SIGTERM)
        client.until(lambda: client.terminated)
        assert client.ended == set(streams)
        assert client.reset == {}
        assert client.goaway == ErrorCodes.NO_ERROR
        client.sock.settimeout(10)
        assert client.sock.recv(65536) == b""  # and the hub closes the connection
    finally:
        client.close()
        h.stop()


def test_ten_eventsources_in_chromium_share_one_tls_connection(
    tls_hub: HubProcess,
) -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("SSEHUB_REQUIRE_BROWSER"):
            raise RuntimeError("SSEHUB_REQUIRE_BROWSER is set but Chromium is not installed")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    base = f"https://127.0.0.1:{tls_hub.port}"
    topic = TOPIC + "/browser"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, "--ignore-certificate-errors"]
        )
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(base + "/healthz")
            page.evaluate(
                """(topic) => {
                    window.got = [];
                    window.open = 0;
                    for (let i = 0; i < 10; i++) {
                        window.got.push([]);
                        const source = new EventSource(
                            '/.well-known/mercure?topic=' + encodeURIComponent(topic));
                        source.onopen = () => { window.open++; };
                        source.onmessage = (e) => { window.got[i].push(e.data); };
                    }
                }""",
                topic,
            )
            page.wait_for_function("window.open === 10", timeout=20_000)
            answer = page.evaluate(
                """async ([topic, token]) => {
                    const res = await fetch('/.well-known/mercure', {
                        method: 'POST',
                        headers: {'Authorization': 'Bearer ' + token},
                        body: new URLSearchParams({topic: topic, data: 'to every tab'}),
                    });
                    return res.status;
                }""",
                [topic, tls_hub.publisher_token],
            )
            assert answer == 200
            page.wait_for_function(
                "window.got.every((events) => events.length === 1)", timeout=20_000
            )
            assert page.evaluate("window.got") == [["to every tab"]] * 10
            metrics = page.evaluate("fetch('/metrics').then((r) => r.text())")
            assert metric(metrics, "ssehub_subscribers") == 10
            assert metric(metrics, "ssehub_connections") == 1  # all of it over one connection
            assert set(next_hop_protocols(page)) == {"h2"}
        finally:
            browser.close()


def test_tls_needs_both_files() -> None:
    with pytest.raises(RuntimeError, match="keyfile"):
        start_hub("--certfile", "/nonexistent.pem")


def test_plain_client_is_refused_cleanly_on_a_tls_port(tls_hub: HubProcess) -> None:
    """A plain HTTP/1.1 client on the TLS port does not get a stream; the hub stays up."""
    with pytest.raises((ConnectionError, OSError)):
        SSEClient(tls_hub.port, HUB + "?topic=x", {})
    assert httpx.get(f"https://127.0.0.1:{tls_hub.port}/healthz", verify=False).status_code == 200


def test_h2_connection_limits_and_idle_timeout() -> None:
    """The HTTP/1.1 limits hold for HTTP/2: a connection over the per-address limit has its
    first request answered 429 with the reason, then GOAWAY; an idle one is closed."""
    h = start_hub(
        "--http2",
        "--anonymous",
        "--max-connections-per-ip",
        "1",
        "--head-timeout",
        "1",
        "--keep-alive-timeout",
        "1",
    )
    first = RawH2(h.port)
    try:
        first.get(HUB + "?topic=x", read=True)
        first.until(lambda: any(first.body.values()))

        async def refused() -> httpx.Response:
            async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
                return await client.get(h.base + "/healthz")

        answer = asyncio.run(refused())
        assert answer.status_code == 429
        assert answer.text.startswith("too many connections from 127.0.0.1")
        assert answer.headers["retry-after"] == "1"
    finally:
        first.close()
    idle = RawH2(h.port)  # the first has gone: admitted, but never asks anything
    try:
        idle.until(lambda: idle.terminated)  # closed by --head-timeout
        assert idle.goaway == ErrorCodes.NO_ERROR
    finally:
        idle.close()
    asked = RawH2(h.port)
    try:
        stream = asked.get("/healthz", read=True)
        asked.until(lambda: asked.terminated)  # answered, then idle past --keep-alive-timeout
        assert asked.body[stream] == b"ok\n"
        assert stream in asked.ended
        assert asked.goaway == ErrorCodes.NO_ERROR
    finally:
        asked.close()
        h.stop()


def test_h2_protocol_error_closes_only_that_connection(h2c_hub: HubProcess) -> None:
    """A connection that breaks the HTTP/2 rules gets GOAWAY(PROTOCOL_ERROR) and is closed;
    its streams leave the hub, and the fan-out to everyone else goes on."""
    topic = TOPIC + "/broken"
    with h2c_hub.subscribe(topic) as bystander:
        bad = RawH2(h2c_hub.port)
        try:
            path = HUB + "?" + urlencode({"topic": topic})
            streams = [bad.get(path, read=True) for _ in range(2)]
            bad.until(lambda: all(bad.body[s] for s in streams))
            ping_on_a_stream = b"\x00\x00\x08\x06\x00\x00\x00\x00\x01" + b"\x00" * 8
            bad.sock.sendall(ping_on_a_stream)  # PING belongs on stream 0
            bad.until(lambda: bad.terminated)
            assert bad.goaway == ErrorCodes.PROTOCOL_ERROR
            bad.sock.settimeout(10)
            assert bad.sock.recv(65536) == b""
        finally:
            bad.close()
        assert h2c_hub.publish(topic, "still here").status_code == 200
        assert [e.data for e in bystander.events(1)] == ["still here"]
        deadline = time.monotonic() + 10
        while metric(httpx.get(h2c_hub.base + "/metrics").text, "ssehub_subscribers") != 1:
            assert time.monotonic() < deadline, "the broken connection's streams stayed"
            time.sleep(0.05)


def test_h2_stream_stuck_past_dispatch_timeout_is_reset() -> None:
    """A stream whose window stays closed with bytes waiting, under the size bound, is reset
    once nothing has moved for --dispatch-timeout; a reading sibling is left alone."""
    h = start_hub("--http2", "--anonymous", "--dispatch-timeout", "1")
    topic = TOPIC + "/stuck"
    client = RawH2(h.port)
    try:
        path = HUB + "?" + urlencode({"topic": topic})
        stalled = client.get(path, read=False)
        reader = client.get(path, read=True)
        client.until(lambda: bool(client.body[stalled] and client.body[reader]))
        for n in range(6):  # 96 kB: past the 64 kB window, far under --max-write-buffer
            assert h.publish(topic, f"{n:05d}" + "z" * 16_000).status_code == 200
        client.until(lambda: stalled in client.reset)
        assert client.reset[stalled] == ErrorCodes.CANCEL
        assert reader not in client.reset
        assert client.body[reader].count(b"\n\n") == 6
    finally:
        client.close()
        h.stop()


def test_h2_write_timeout_ends_the_stream_not_the_connection() -> None:
    h = start_hub("--http2", "--anonymous", "--write-timeout", "1")
    client = RawH2(h.port)
    try:
        stream = client.get(HUB + "?topic=t", read=True)
        client.until(lambda: stream in client.ended)  # END_STREAM: a clean end
        assert client.reset == {}
        assert not client.terminated
        again = client.get("/healthz", read=True)  # the connection still serves
        client.until(lambda: again in client.ended)
        assert client.body[again] == b"ok\n"
    finally:
        client.close()
        h.stop()


def test_demo_page_over_https_in_chromium(certificate: tuple[Path, Path]) -> None:
    """With TLS on, the demo page works as over HTTP: its Secure cookie authorizes the
    EventSource, the clock ticks, the publish form reaches the feed; all over HTTP/2."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("SSEHUB_REQUIRE_BROWSER"):
            raise RuntimeError("SSEHUB_REQUIRE_BROWSER is set but Chromium is not installed")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    certfile, keyfile = certificate
    h = start_hub("--certfile", str(certfile), "--keyfile", str(keyfile), key=None)  # demo on
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, "--ignore-certificate-errors"]
            )
            try:
                context = browser.new_context(ignore_https_errors=True)
                page = context.new_page()
                page.goto(f"https://127.0.0.1:{h.port}/")
                cookies = {c["name"]: c for c in context.cookies()}
                assert cookies["mercureAuthorization"]["secure"]
                page.wait_for_function(
                    "Number(document.getElementById('clock').dataset.ticks || 0) >= 2",
                    timeout=20_000,
                )
                page.fill("textarea[name=data]", "hello over https")
                page.click("button[type=submit]")
                page.wait_for_function(
                    "document.getElementById('feed').innerText.includes('hello over https')",
                    timeout=20_000,
                )
                assert set(next_hop_protocols(page)) == {"h2"}
            finally:
                browser.close()
    finally:
        h.stop()


def test_h2_rapid_reset_gets_goaway(h2c_hub: HubProcess) -> None:
    """Opening and cancelling streams at once ("rapid reset") costs the client nothing and
    the hub a subscribe each: past MAX_RESETS in the window the connection is told to go away
    (ENHANCE_YOUR_CALM); the hub is left with no subscriber of it and serves on."""
    from ssehub.server.h2 import MAX_RESETS

    client = RawH2(h2c_hub.port)
    try:
        path = HUB + "?" + urlencode({"topic": TOPIC + "/reset"})
        head = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")]
        for _ in range(MAX_RESETS + 20):
            stream_id = client.h2.get_next_available_stream_id()
            client.h2.send_headers(stream_id, head, end_stream=True)
            client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
        client.sock.sendall(client.h2.data_to_send())
        client.until(lambda: client.terminated)
        assert client.goaway == ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        client.close()
    deadline = time.monotonic() + 10
    while metric(httpx.get(h2c_hub.base + "/metrics").text, "ssehub_subscribers") != 0:
        assert time.monotonic() < deadline, "the reset streams stayed subscribed"
        time.sleep(0.05)


async def ten_topics_on_one_connection(
    client: httpx.AsyncClient, base: str, token: str, streams: int = 10
) -> None:
    """``streams`` streams on one HTTP/2 connection, one topic each; then one publish to
    each topic over the same connection: every stream gets its own event."""
    ready = [asyncio.Event() for _ in range(streams)]

    async def subscribe(number: int) -> str:
        params = {"topic": f"{TOPIC}/many/{number}"}
        async with client.stream("GET", base + HUB, params=params) as answer:
            assert (answer.http_version, answer.status_code) == ("HTTP/2", 200)
            ready[number].set()
            async for line in answer.aiter_lines():
                if line.startswith("data: "):
                    return line[6:]
        raise AssertionError("the stream ended without an event")

    tasks = [asyncio.create_task(subscribe(n)) for n in range(streams)]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
        for number in range(streams):
            published = await client.post(
                base + HUB,
                data={"topic": f"{TOPIC}/many/{number}", "data": f"event {number}"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert (published.http_version, published.status_code) == ("HTTP/2", 200)
        got = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert got == [f"event {n}" for n in range(streams)]
    finally:
        for task in tasks:
            task.cancel()
    metrics = await client.get(base + "/metrics")
    assert metric(metrics.text, "ssehub_connections") == 1


@pytest.mark.parametrize("streams", [10, 50])
def test_many_streams_and_their_publishes_on_one_tls_connection(
    tls_hub: HubProcess, certificate: tuple[Path, Path], streams: int
) -> None:
    async def main() -> None:
        verify = trusting(certificate)
        async with httpx.AsyncClient(http2=True, verify=verify, timeout=10) as client:
            base = f"https://127.0.0.1:{tls_hub.port}"
            await ten_topics_on_one_connection(client, base, tls_hub.publisher_token, streams)

    asyncio.run(main())


def test_many_streams_and_their_publishes_on_one_h2c_connection(h2c_hub: HubProcess) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
            await ten_topics_on_one_connection(client, h2c_hub.base, h2c_hub.publisher_token)

    asyncio.run(main())


def test_one_event_for_the_last_of_ten_streams_arrives_at_once(h2c_hub: HubProcess) -> None:
    """httpx reads a connection in one task at a time: an event for the tenth stream, read
    by another stream's task, used to wait for that task's read timeout (here 30 s)."""

    async def main() -> None:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
            ready = [asyncio.Event() for _ in range(10)]

            async def subscribe(number: int) -> str | None:
                params = {"topic": f"{TOPIC}/last/{number}"}
                async with client.stream("GET", h2c_hub.base + HUB, params=params) as answer:
                    ready[number].set()
                    async for line in answer.aiter_lines():
                        if line.startswith("data: "):
                            return line[6:]
                return None

            tasks = [asyncio.create_task(subscribe(n)) for n in range(10)]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
            h2c_hub.publish(f"{TOPIC}/last/9", "to the last")  # over HTTP/1.1, elsewhere
            assert await asyncio.wait_for(tasks[9], 5) == "to the last"
            for task in tasks[:9]:
                task.cancel()

    asyncio.run(main())
