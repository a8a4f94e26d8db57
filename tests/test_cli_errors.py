"""Every misconfiguration answers in one line on stderr through the real `ssehub` command:
exit 2 for a usage error, 1 for a runtime one, and no traceback unless --debug asks for it."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .support import KEY, HubProcess, await_listening, free_port, http_server, make_token

Case = tuple[list[str], int, str]


def ssehub(
    *args: str, env: dict[str, str] | None = None, wrap: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command as a user would (optionally under ``wrap``, e.g. unshare)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SSEHUB_")}
    try:
        return subprocess.run(
            [*(wrap or []), sys.executable, "-m", "ssehub.cli", *args],
            env={**clean, **(env or {})},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"ssehub {' '.join(args)} did not stop with an error: {exc.stderr!r}")


def assert_one_line(done: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    """Exit ``code``, exactly one line on stderr, naming the fault, no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert done.returncode == code, done.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of broken inputs: not-a-database, a directory, key files."""
    root = tmp_path_factory.mktemp("cli-errors")
    (root / "garbage.db").write_bytes(b"this is no SQLite database, just bytes" * 4)
    (root / "a-directory.db").mkdir()
    (root / "not-a-jwks.json").write_text('{"keys": [{"kty": "oct"}]}')
    (root / "binary.pem").write_bytes(b"\xff\xfe\x00")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (root / "public.pem").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return root


def _usage_cases() -> list[Case]:
    long_url = "8192"
    return [
        (["serve", "--store", "bogus"], 2, "unknown store 'bogus'"),
        (["serve", "--store", "sqlite:"], 2, "sqlite store needs a path"),
        (["serve", "--store", "redis://127.0.0.1:abc/0"], 2, "is not a Redis URL"),
        (["serve", "--port", "70000"], 2, "'--port'"),
        (["serve", "--port", "eighty"], 2, "'--port'"),
        (["serve", "--max-connections", "0"], 2, "'--max-connections'"),
        (["serve", "--max-pipelined", "1"], 2, "'--max-pipelined'"),
        (["serve", "--max-body-size", "0"], 2, "'--max-body-size'"),
        (["serve", "--max-topics", "0"], 2, "'--max-topics'"),
        (["serve", "--max-url-length", "10"], 2, "'--max-url-length'"),
        (["serve", "--max-head-size", "100"], 2, "cannot hold a request line"),
        (["serve", "--max-url-length", long_url, "--max-head-size", long_url], 2, "head-size"),
        (["serve", "--head-timeout", "0"], 2, "'--head-timeout'"),
        (["serve", "--heartbeat", "nan"], 2, "finite"),
        (["serve", "--history-size", "-1"], 2, "'--history-size'"),
        (["serve", "--workers", "0"], 2, "'--workers'"),
        (["serve", "--workers", "2"], 2, "shared store"),
        (["serve", "--cors-origins", "example.com"], 2, "'example.com' is not an origin"),
        (["serve", "--cors-origins", "https://example.com/app"], 2, "has a path"),
        (["serve", "--publish-origins", "https://example.com:x"], 2, "port"),
        (["serve", "--jwt-algorithm", "HS257"], 2, "unknown algorithm 'HS257'"),
        (["serve", "--jwt-algorithm", "HS256,none"], 2, "'none'"),
        (["serve", "--jwt-key", " "], 2, "is empty"),
        (["serve", "--no-such-option"], 2, "--no-such-option"),
        (["publish", "--url", "localhost:8000", "--topic", "t", "--data", "x"], 2, "http(s)"),
        (["subscribe", "--url", "ftp://hub/", "--topic", "t"], 2, "http(s)"),
        (["token", "--key", KEY, "--algorithm", "none"], 2, "'--algorithm'"),
        (["token", "--key", KEY, "--algorithm", "RS256"], 2, "cannot sign RS256"),
        (["token", "--key", KEY, "--claim", "novalue"], 2, "NAME=VALUE"),
        (["bench", "--token", "t", "--window", "0"], 2, "'--window'"),
        (["bench", "--token", "t", "--duration", "0"], 2, "'--duration'"),
        (["bench", "--token", "t", "--load-cpu", "4096"], 2, "CPU 4096"),
        (["bench", "--token", "t", "--hub-pid", "4194305"], 2, "no process 4194305"),
        (["bench", "--token", "t", "--json", "/nonexistent/dir/r.json"], 2, "does not exist"),
        (["bench", "--raw-subscribe", "http://127.0.0.1:1/s"], 2, "both --raw-subscribe"),
    ]


@pytest.mark.parametrize(
    ("args", "code", "fragment"), _usage_cases(), ids=[" ".join(c[0]) for c in _usage_cases()]
)
def test_usage_errors_are_one_line_exit_2(args: list[str], code: int, fragment: str) -> None:
    if args[0] == "serve" and "--jwt-key" not in args:
        args = [*args, "--jwt-key", KEY]
    assert_one_line(ssehub(*args), code, fragment)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SSEHUB_MAX_CONNECTIONS": "0"}, "SSEHUB_MAX_CONNECTIONS"),
        ({"SSEHUB_STORE": "bogus"}, "unknown store"),
        ({"SSEHUB_PORT": "abc"}, "'--port'"),
    ],
)
def test_environment_errors_are_one_line_exit_2(env: dict[str, str], fragment: str) -> None:
    assert_one_line(ssehub("serve", "--jwt-key", KEY, env=env), 2, fragment)


def test_a_made_key_needs_an_hmac_algorithm() -> None:
    assert_one_line(ssehub("serve", "--jwt-algorithm", "RS256"), 2, "HMAC secret")


# {files}: the broken inputs above; {closed}: a port on 127.0.0.1 where nothing listens.
_RUNTIME_CASES: list[tuple[str, list[str], str]] = [
    (
        "sqlite-no-directory",
        ["--store", "sqlite:/nonexistent/dir/x.db"],
        "/nonexistent/dir does not exist",
    ),
    ("sqlite-not-a-database", ["--store", "sqlite:{files}/garbage.db"], "is not a SQLite database"),
    ("sqlite-a-directory", ["--store", "sqlite:{files}/a-directory.db"], "is a directory"),
    (
        "redis-closed",
        ["--store", "redis://127.0.0.1:{closed}/0"],
        "127.0.0.1:{closed} does not answer",
    ),
    ("redis-bad-db", ["--store", "redis://127.0.0.1:6379/99"], "DB index is out of range"),
    (
        "workers-redis-closed",
        ["--workers", "2", "--store", "redis://127.0.0.1:{closed}/0"],
        "127.0.0.1:{closed} does not answer",
    ),
    ("pem-missing", ["--jwt-key", "@/nonexistent/key.pem"], "No such file or directory"),
    ("pem-a-directory", ["--jwt-key", "@{files}"], "Is a directory"),
    ("pem-binary", ["--jwt-key", "@{files}/binary.pem"], "is not text"),
    ("jwks-file-invalid", ["--jwt-key", "@{files}/not-a-jwks.json"], "not a usable JWKS"),
    (
        "pem-wrong-algorithm",
        ["--jwt-key", "@{files}/public.pem"],
        "cannot verify tokens signed with HS256",
    ),
    (
        "jwks-url-closed",
        ["--jwt-key", "http://127.0.0.1:{closed}/jwks.json"],
        "could not fetch the JWKS",
    ),
    (
        "subscriber-jwks-url-closed",
        ["--publisher-jwt-key", KEY, "--subscriber-jwt-key", "http://127.0.0.1:{closed}/"],
        "subscriber JWT key",
    ),
    ("host-not-local", ["--host", "192.0.2.1"], "not an address of this machine"),
    ("host-unknown", ["--host", "no-such-host.invalid"], "--host no-such-host.invalid"),
]


@pytest.mark.parametrize(
    ("args", "fragment"), [c[1:] for c in _RUNTIME_CASES], ids=[c[0] for c in _RUNTIME_CASES]
)
def test_serve_runtime_errors_are_one_line_exit_1(
    files: Path, args: list[str], fragment: str
) -> None:
    closed = free_port()
    args = [a.format(files=files, closed=closed) for a in args]
    if "--jwt-key" not in args and "--publisher-jwt-key" not in args:
        args = [*args, "--jwt-key", KEY]
    done = ssehub("serve", "--port", "0", *args)
    assert_one_line(done, 1, fragment.format(closed=closed))


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A Redis of our own that wants a password (the shared one has none)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("no redis-server here")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--requirepass", "s3cret", "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )
    if not await_listening(proc, port, within=10):
        proc.kill()
        pytest.fail("redis-server did not start")
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize(
    ("password", "fragment"),
    [("", "requires a password: put it in the URL"), (":wrong@", "refused the credentials")],
    ids=["none", "wrong"],
)
def test_redis_credentials_are_one_line(
    redis_with_password: int, password: str, fragment: str
) -> None:
    store = f"redis://{password}127.0.0.1:{redis_with_password}/0"
    done = ssehub("serve", "--jwt-key", KEY, "--port", "0", "--store", store)
    assert_one_line(done, 1, fragment)
    assert "wrong" not in done.stderr  # the password is never shown


def test_a_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = ssehub("serve", "--jwt-key", KEY, "--port", port)
    assert_one_line(done, 1, "already in use")
    assert port in done.stderr


def test_a_failed_start_prints_no_first_run_tokens() -> None:
    """Without a key the hub makes one and prints tokens, but only once it listens."""
    done = ssehub("serve", "--port", "0", "--store", "sqlite:/nonexistent/dir/x.db")
    assert_one_line(done, 1, "does not exist")


def _holding(path: Path) -> list[str]:
    """This process's open files under ``path`` (a database and its WAL), and its SQLite
    store threads."""
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.startswith(str(path)):
            held.append(target)
    return held + [t.name for t in threading.enumerate() if t.name.startswith("ssehub-sqlite")]


@pytest.mark.parametrize("face", ["serve", "asgi"])
def test_a_failed_start_closes_the_store_it_opened(tmp_path: Path, face: str) -> None:
    """A key file that cannot be read is found after the store is open: the start closes the
    store before it fails, every time an ASGI server retries its lifespan."""
    from ssehub import Settings
    from ssehub.asgi import HubApp
    from ssehub.errors import ConfigError
    from ssehub.server import serve

    settings = Settings(
        store=f"sqlite:{tmp_path / 'events.db'}",
        publisher_jwt_key=f"@{tmp_path / 'missing.pem'}",
        subscriber_jwt_key=KEY,
        demo=False,
    )

    async def start() -> None:
        if face == "serve":
            await serve(settings, clock=False)
        else:
            await HubApp(settings).start()

    async def start_twice() -> list[str]:
        for _ in range(2):
            with pytest.raises(ConfigError, match="cannot read"):
                await start()
        return _holding(tmp_path)

    assert asyncio.run(start_twice()) == []


def test_an_asgi_lifespan_that_fails_says_why(tmp_path: Path) -> None:
    """Served on its own (``uvicorn --factory ssehub.asgi:from_env``), the app answers a failed
    start with ``lifespan.startup.failed`` and its one-line reason, so the server stops and
    says why; a raised error reads to uvicorn as "lifespan unsupported", and it went on."""
    from ssehub import Settings
    from ssehub.asgi import HubApp

    app = HubApp(Settings(publisher_jwt_key=f"@{tmp_path / 'missing.pem'}", demo=False))
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    [failed] = sent
    assert failed["type"] == "lifespan.startup.failed"
    assert "cannot read" in failed["message"] and "\n" not in failed["message"]


def _unshare(*flags: str) -> list[str]:
    """A command prefix that runs in a new namespace, or a skip when this host refuses one."""
    tool = shutil.which("unshare")
    if tool is None:
        pytest.skip("no unshare(1) here")
    probe = subprocess.run([tool, *flags, "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unshare {' '.join(flags)} is not permitted here")
    return [tool, *flags]


def test_a_port_not_permitted_is_one_line() -> None:
    # A user namespace has no CAP_NET_BIND_SERVICE over the host's network, even as its root.
    wrap = _unshare("-r")
    done = ssehub("serve", "--jwt-key", KEY, "--port", "80", wrap=wrap)
    assert_one_line(done, 1, "permission denied")


@pytest.mark.parametrize("existing", [True, False])
def test_a_read_only_store_is_one_line(tmp_path: Path, existing: bool) -> None:
    """The directory is bind-mounted read-only in a private mount namespace."""
    path = tmp_path / "hub.db"
    if existing:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE t (x)")
        db.close()
    wrap = _unshare("-m")
    mount = f"mount --bind {tmp_path} {tmp_path} && mount -o remount,bind,ro {tmp_path}"
    probe = subprocess.run([*wrap, "sh", "-c", mount], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount here: {probe.stderr!r}")
    done = ssehub(
        "serve", "--jwt-key", KEY, "--port", "0", "--store", f"sqlite:{path}",
        wrap=[*wrap, "sh", "-c", f'{mount} && exec "$@"', "sh"],
    )  # fmt: skip
    assert_one_line(done, 1, "read-only file system")


@pytest.mark.parametrize("command", ["publish", "subscribe"])
def test_an_unreachable_hub_is_one_line(command: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/.well-known/mercure"
    args = ["--url", url, "--topic", "urn:t"] + (["--data", "x"] if command == "publish" else [])
    assert_one_line(ssehub(command, *args), 1, "Connection refused")


@pytest.fixture(scope="module")
def failing_hub() -> Iterator[str]:
    """A server that answers every request 503 with a reason, as a hub whose store is down."""
    with http_server(b"store unavailable: Redis is unavailable\n", 503, "text/plain") as base:
        yield f"{base}/.well-known/mercure"


@pytest.mark.parametrize("command", ["publish", "subscribe"])
def test_a_hub_error_gives_the_hubs_reason(failing_hub: str, command: str) -> None:
    args = ["--url", failing_hub, "--topic", "urn:t"]
    if command == "publish":
        args += ["--data", "x"]
    assert_one_line(ssehub(command, *args), 1, "503: store unavailable: Redis is unavailable")


def test_a_refusing_hub_gives_its_reason(hub: HubProcess) -> None:
    done = ssehub("publish", "--url", hub.url, "--topic", "t", "--data", "x", "--token", "bad")
    assert_one_line(done, 1, "401: token from the Authorization header is not a well-formed JWS")
    token = make_token(subscribe=["urn:other"])
    done = ssehub("subscribe", "--url", hub.url, "--topic", "t", "--token", token + "x")
    assert_one_line(done, 1, "401")


def test_subscribe_to_a_page_that_is_no_stream_is_one_line(hub: HubProcess) -> None:
    """An EventSource fails on a 200 that is not text/event-stream; so does the command,
    instead of reconnecting to the wrong URL forever."""
    done = ssehub("subscribe", "--url", f"{hub.base}/healthz", "--topic", "t")
    assert_one_line(done, 1, "not an event stream")


def test_token_errors_are_one_line(files: Path) -> None:
    assert_one_line(ssehub("token", "--key", "@/nonexistent/key.pem"), 1, "cannot read")
    done = ssehub("token", "--key", f"@{files}/public.pem", "--algorithm", "RS256")
    assert_one_line(done, 2, "cannot sign RS256")


def test_bench_errors_are_one_line(hub: HubProcess) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    done = ssehub("bench", "--url", f"{closed}/.well-known/mercure", "--token", "t")
    assert_one_line(done, 1, "Connection refused")
    done = ssehub("bench", "--url", hub.url, "--token", "bad", "--subscribers", "1")
    assert_one_line(done, 1, "the hub refused the bench's publish: 401")
    done = ssehub(
        "bench", "--raw-subscribe", f"{closed}/events", "--raw-publish", f"{closed}/publish",
        "--subscribers", "1", "--duration", "1", "--warmup", "0",
    )  # fmt: skip
    assert_one_line(done, 1, "Connection refused")
    no_anonymous = hub.url.replace("/.well-known", "/nowhere/.well-known")
    done = ssehub(
        "bench", "--raw-subscribe", no_anonymous, "--raw-publish", no_anonymous,
        "--subscribers", "1", "--duration", "1", "--warmup", "0",
    )  # fmt: skip
    assert_one_line(done, 1, "the target refused a subscriber: HTTP/1.1 404")


Debug = Callable[[list[str]], subprocess.CompletedProcess[str]]


@pytest.mark.parametrize(
    "run",
    [
        lambda args: ssehub("--debug", *args),
        lambda args: ssehub(*args, "--debug"),
        lambda args: ssehub(*args, env={"SSEHUB_DEBUG": "1"}),
    ],
    ids=["before", "after", "environment"],
)
def test_debug_shows_the_traceback(run: Debug) -> None:
    done = run(["serve", "--jwt-key", KEY, "--port", "0", "--store", "sqlite:/nonexistent/x/y"])
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "sqlite3.OperationalError" in done.stderr  # the cause, for a bug report
    last = done.stderr.splitlines()[-1]
    assert last.startswith("Error: ") and "does not exist" in last


def test_a_good_start_still_starts(tmp_path: Path) -> None:
    """The checks refuse only what cannot work: the defaults and a SQLite store pass."""
    store = f"sqlite:{tmp_path}/hub.db"
    origins = "https://a.example:8443,*"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ssehub.cli",
            "serve",
            "--port",
            "0",
            "--store",
            store,
            "--cors-origins",
            origins,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SSEHUB_")},
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        while first.startswith(("No JWT key", "  ")):  # the first-run tokens come first
            first = proc.stderr.readline()
        assert first.startswith("ssehub listening on"), first
    finally:
        proc.terminate()
        proc.wait(10)
