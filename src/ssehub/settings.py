"""Configuration in one typed object: the CLI, the environment and Python build the same one.

Each field's metadata carries its help text; ``settings_options`` makes the CLI's
``--name-with-dashes`` options, the ``SSEHUB_NAME`` environment variables and the docs table
from these fields, so a default lives here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .settings_checks import (
    InvalidSetting,
    check_algorithms,
    check_number,
    check_origins,
    check_store,
    check_url,
)

__all__ = ["DEFAULTS", "InvalidSetting", "KiB", "MiB", "Settings"]

KiB = 1024
MiB = 1024 * KiB


def _opt(default: Any, help: str, group: str) -> Any:
    return field(default=default, metadata={"help": help, "group": group})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the hub with its default."""

    # -- where and how ----------------------------------------------------------------------
    host: str = _opt("127.0.0.1", "Address to listen on.", "server")
    port: int = _opt(8000, "Port to listen on.", "server")
    store: str = _opt(
        "memory",
        "Where history lives: memory, sqlite:PATH (durable) or redis://HOST:PORT/DB (shared by "
        "several hubs; ?prefix=NAME picks the keys).",
        "server",
    )
    workers: int = _opt(
        1, "Processes sharing the port (SO_REUSEPORT); needs a Redis store.", "server"
    )
    demo: bool = _opt(
        True,
        "Serve the demo page and its clock at / (serve: on only when it made its key).",
        "server",
    )
    certfile: str | None = _opt(
        None,
        "PEM certificate chain: serve HTTPS, with HTTP/2 negotiated by ALPN (HTTP/1.1 for "
        "older clients). Needs --keyfile.",
        "server",
    )
    keyfile: str | None = _opt(None, "PEM private key of --certfile.", "server")
    http2: bool = _opt(
        False,
        "Also accept HTTP/2 without TLS (h2c with prior knowledge) on the plain port. With "
        "--certfile, HTTP/2 is always offered.",
        "server",
    )
    subscriptions: bool = _opt(
        False,
        "Publish subscription events (live only, never kept in history) and serve the Mercure"
        " subscriptions API.",
        "server",
    )
    # -- auth -------------------------------------------------------------------------------
    publisher_jwt_key: str | None = _opt(
        None,
        "Key that verifies publisher JWTs: an HMAC secret, a PEM key (text, or @PATH), or a "
        "JWKS (@PATH.json or an https:// URL).",
        "auth",
    )
    subscriber_jwt_key: str | None = _opt(
        None, "Key that verifies subscriber JWTs (same forms as the publisher key).", "auth"
    )
    jwt_algorithm: str = _opt(
        "HS256", "Algorithms tokens may be signed with, comma-separated (never 'none').", "auth"
    )
    jwt_leeway: float = _opt(0.0, "Seconds of clock skew allowed on exp, nbf and iat.", "auth")
    jwt_audience: str | None = _opt(None, "Required 'aud' claim, if set.", "auth")
    jwt_issuer: str | None = _opt(None, "Required 'iss' claim, if set.", "auth")
    cookie_name: str = _opt("mercureAuthorization", "Cookie that may carry a JWT.", "auth")
    dialects: tuple[str, ...] = _opt(
        ("0.x", "1.0"),
        "Mercure dialects served, chosen per request (comma-separated): 0.x is draft-07 "
        "(topic=, the mercure claim), 1.0 is draft-08 (match=, at+jwt access tokens).",
        "auth",
    )
    resource: str | None = _opt(
        None,
        "Mercure 1.0: the hub's resource identifier, required in access tokens' aud (unset: "
        "the URL the client reached, http or https, from its Host header).",
        "auth",
    )
    access_cookie_name: str = _opt(
        "__Secure-mercure_access_token",
        "Mercure 1.0: cookie that may carry an access token (browsers keep __Secure- names "
        "for https only).",
        "auth",
    )
    anonymous: bool = _opt(False, "Let subscribers without a token receive public updates.", "auth")
    cors_origins: tuple[str, ...] = _opt(
        (),
        "Origins allowed to call the hub from a browser (comma-separated; * for any, "
        "answered without credentials: cookies need origins listed by name).",
        "auth",
    )
    publish_origins: tuple[str, ...] = _opt(
        (),
        "Origins allowed to publish with a cookie (CSRF check on Origin/Referer; never *).",
        "auth",
    )
    # -- streams ----------------------------------------------------------------------------
    heartbeat: float = _opt(
        15.0, "Seconds between keep-alive comments on streams; 0 disables.", "streams"
    )
    retry: int | None = _opt(None, "Reconnection time (ms) sent as the SSE retry field.", "streams")
    write_timeout: float = _opt(
        0.0,
        "Longest life of a stream in seconds, after which it ends cleanly and the client "
        "resumes with Last-Event-ID; 0: no limit.",
        "streams",
    )
    max_write_buffer: int = _opt(
        1 * MiB,
        "Unsent bytes past which a slow subscriber is closed (it resumes later).",
        "streams",
    )
    coalesce: float = _opt(
        0.0,
        "Latency first (0) or throughput first (seconds, e.g. 0.005): events that arrive "
        "during a fan-out always join it; with a value, the next round of writes to "
        "subscribers already passed waits as long as the last round took, at most this long, "
        "so each of their writes carries more events. Capacity is the same; at a steady rate "
        "it trades that much latency for CPU (a third less at 1,000 subscribers, 1,000/s).",
        "streams",
    )
    max_round_intake: int = _opt(
        256 * KiB,
        "Bytes of new events one fan-out round takes in at most; past it, publishes wait for "
        "the round to end (their answers too), so publishers that outrun the fan-out slow "
        "down instead of making every subscriber's next write, and so the next round, longer "
        "(1,000 HTTP/2 subscribers, 256 publishes in flight: p99 1.0 -> 0.5 s). 0: no bound.",
        "streams",
    )
    dispatch_timeout: float = _opt(
        30.0,
        "Seconds a subscriber may leave sent bytes unread before it is closed (its progress is"
        " looked at four times per timeout, so within about 1.5x); 0: never.",
        "streams",
    )
    # -- history ----------------------------------------------------------------------------
    history_size: int = _opt(10_000, "Events kept for replay; 0 keeps none.", "history")
    history_max_age: float = _opt(0.0, "Seconds an event stays in history; 0: no limit.", "history")
    history_max_bytes: int = _opt(
        64 * MiB,
        "Memory store: bytes history may hold, everything counted (data, wire, ids, topics).",
        "history",
    )
    # -- limits -----------------------------------------------------------------------------
    max_head_size: int = _opt(16 * KiB, "Largest request head in bytes (431 above).", "limits")
    max_url_length: int = _opt(8 * KiB, "Longest request URL in bytes (414 above).", "limits")
    max_body_size: int = _opt(1 * MiB, "Largest publish body in bytes (413 above).", "limits")
    max_topics: int = _opt(100, "Most topic selectors in one subscription.", "limits")
    max_topic_length: int = _opt(
        2 * KiB,
        "Longest topic of a publish in characters (400 above); history, routes and caches "
        "hold topics, and a longer one would not fit a subscribe URL.",
        "limits",
    )
    max_template_length: int = _opt(
        2048,
        "Longest URI template topic selector in characters (400 above); 2048 at most.",
        "limits",
    )
    max_template_expressions: int = _opt(
        32,
        "Most URI template expressions in one subscription, all its selectors together (400 "
        "above): every new topic is tried against every template.",
        "limits",
    )
    max_template_expressions_per_address: int = _opt(
        1024,
        "Most URI template expressions in all the subscriptions from one client address (429"
        " above); 0: no limit. Each costs every publish to a new topic.",
        "limits",
    )
    max_pipelined: int = _opt(64, "Requests read ahead on one connection.", "limits")
    max_pending_bytes: int = _opt(
        64 * MiB,
        "Publishes waiting for the store at most, in bytes (data, topics and id, plus 256 for"
        " each): past it a publish is answered 503 hub busy with Retry-After.",
        "limits",
    )
    max_connections: int = _opt(10_000, "Open connections at most (503 above).", "limits")
    max_connections_per_ip: int = _opt(
        1_000,
        "Open connections from one client address at most (429 above); 0: no limit.",
        "limits",
    )
    head_timeout: float = _opt(10.0, "Seconds a client has to send a request head.", "limits")
    keep_alive_timeout: float = _opt(
        60.0, "Seconds an idle keep-alive connection stays open.", "limits"
    )
    shutdown_timeout: float = _opt(
        10.0, "Seconds to drain on SIGTERM before remaining connections are cut.", "limits"
    )

    def __post_init__(self) -> None:
        _validate(self)


# Positive minimums: below these no request, stream or connection could ever succeed.
_AT_LEAST_ONE = (
    "max_connections",
    "max_body_size",
    "max_topics",
    "max_write_buffer",
    "max_pending_bytes",
)
_POSITIVE_TIMES = ("head_timeout", "keep_alive_timeout")
_REQUEST_LINE = len("GET  HTTP/1.1\r\nHost: x\r\n\r\n")
_MIN_URL = len("/.well-known/mercure?topic=x")


def _validate(s: Settings) -> None:
    """Refuse, one reason at a time, what could never work: every face gets the same checks."""
    for f in fields(s):
        value = getattr(s, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        check_number(f.name, value)
    if s.coalesce > 0.1:
        raise InvalidSetting("coalesce", f"must be at most 0.1 s, got {s.coalesce}")
    if s.port > 65535:
        raise InvalidSetting("port", f"must be 0-65535, got {s.port}")
    if s.workers < 1:
        raise InvalidSetting("workers", f"must be >= 1, got {s.workers}")
    if s.workers > 1 and s.store == "memory":
        raise InvalidSetting(
            "workers",
            "needs a shared store: each process would keep its own memory history"
            " (use --store redis://…)",
        )
    check_store(s.store)
    if (s.certfile is None) != (s.keyfile is None):
        missing = "keyfile" if s.keyfile is None else "certfile"
        raise InvalidSetting(missing, "TLS needs both --certfile and --keyfile")
    for name in _AT_LEAST_ONE:
        if getattr(s, name) < 1:
            raise InvalidSetting(name, f"must be >= 1, got {getattr(s, name)}")
    for name in _POSITIVE_TIMES:
        if getattr(s, name) <= 0:
            raise InvalidSetting(name, f"must be > 0 seconds, got {getattr(s, name):g}")
    if s.max_pipelined < 2:
        raise InvalidSetting(
            "max_pipelined",
            f"must be >= 2 (reading pauses at that many queued requests and resumes below"
            f" half), got {s.max_pipelined}",
        )
    if s.max_url_length < _MIN_URL:
        raise InvalidSetting(
            "max_url_length",
            f"must be >= {_MIN_URL}, the length of the shortest subscribe URL; got"
            f" {s.max_url_length}",
        )
    if s.max_head_size < s.max_url_length + _REQUEST_LINE:
        raise InvalidSetting(
            "max_head_size",
            f"{s.max_head_size} bytes cannot hold a request line with a URL of max_url_length"
            f" ({s.max_url_length}); it needs at least {s.max_url_length + _REQUEST_LINE}",
        )
    for name in ("publisher_jwt_key", "subscriber_jwt_key"):
        if getattr(s, name) is not None and not getattr(s, name).strip():
            raise InvalidSetting(name, "is empty: give a secret, @PATH or a JWKS URL")
    check_algorithms(s.jwt_algorithm)
    if s.workers > 1 and s.store.startswith("sqlite:"):
        # Each worker would share the history but deliver only what was published
        # through it: subscribers on the other workers would miss events silently.
        raise InvalidSetting(
            "workers",
            "needs a shared store: SQLite delivers live events only within the process that"
            " stored them (use --store redis://…, or one worker)",
        )
    if not s.dialects:
        raise InvalidSetting("dialects", "names no dialect: give 0.x, 1.0 or both")
    for dialect in s.dialects:
        if dialect not in ("0.x", "1.0"):
            raise InvalidSetting("dialects", f"unknown dialect {dialect!r}: use 0.x, 1.0")
    if s.resource is not None:
        check_url("resource", s.resource)
    if "*" in s.publish_origins:
        raise InvalidSetting(
            "publish_origins",
            "'*' would let any site publish with a visitor's cookie (CSRF): list the origins",
        )
    for name in ("cors_origins", "publish_origins"):
        check_origins(name, getattr(s, name))


DEFAULTS = Settings()
"""Every default, for code that takes one knob rather than a whole Settings (Hub, backends)."""
