"""Configuration in one typed object: the CLI, the environment and Python build the same one.

Each field's metadata carries its help text; the CLI makes ``--name-with-dashes`` options
(and ``SSEHUB_NAME`` environment variables) from these fields, and the docs table is
generated from the same place, so a default lives here and nowhere else.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

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
        1, "Processes sharing the port (SO_REUSEPORT); needs a shared store.", "server"
    )
    demo: bool = _opt(
        True,
        "Serve the demo page and its clock at / (serve: on only when it made its key).",
        "server",
    )
    subscriptions: bool = _opt(
        False, "Publish subscription events and serve the Mercure subscriptions API.", "server"
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
    anonymous: bool = _opt(False, "Let subscribers without a token receive public updates.", "auth")
    cors_origins: tuple[str, ...] = _opt(
        (),
        "Origins allowed to call the hub from a browser (comma-separated; * for any).",
        "auth",
    )
    publish_origins: tuple[str, ...] = _opt(
        (), "Origins allowed to publish with a cookie (CSRF check on Origin/Referer).", "auth"
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
    dispatch_timeout: float = _opt(
        30.0,
        "Seconds a subscriber may leave sent bytes unread before it is closed; 0: never.",
        "streams",
    )
    # -- history ----------------------------------------------------------------------------
    history_size: int = _opt(10_000, "Events kept for replay; 0 keeps none.", "history")
    history_max_age: float = _opt(0.0, "Seconds an event stays in history; 0: no limit.", "history")
    history_max_bytes: int = _opt(
        64 * MiB, "Memory store: bytes of history kept at most.", "history"
    )
    # -- limits -----------------------------------------------------------------------------
    max_head_size: int = _opt(16 * KiB, "Largest request head in bytes (431 above).", "limits")
    max_url_length: int = _opt(8 * KiB, "Longest request URL in bytes (414 above).", "limits")
    max_body_size: int = _opt(1 * MiB, "Largest publish body in bytes (413 above).", "limits")
    max_topics: int = _opt(100, "Most topic selectors in one subscription.", "limits")
    max_pipelined: int = _opt(64, "Requests read ahead on one connection.", "limits")
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
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.workers > 1 and self.store == "memory":
            raise ValueError(
                "--workers needs a shared store: each process would keep its own memory history"
                " (use --store redis://…)"
            )
        if "none" in (a.strip().lower() for a in self.jwt_algorithm.split(",")):
            raise ValueError("jwt_algorithm 'none' would accept unsigned tokens")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name} must be >= 0, got {value}")


DEFAULTS = Settings()
"""Every default, for code that takes one knob rather than a whole Settings (Hub, backends)."""


class Kind(enum.Enum):
    """What a setting holds; the environment, the CLI and the docs all dispatch on this."""

    FLAG = "flag"
    INT = "int"
    FLOAT = "float"
    TEXT = "text"
    LIST = "list"  # comma-separated on the command line and in the environment


_KINDS = {
    "bool": Kind.FLAG,
    "int": Kind.INT,
    "float": Kind.FLOAT,
    "str": Kind.TEXT,
    "tuple[str, ...]": Kind.LIST,
}


@dataclass(frozen=True, slots=True)
class Option:
    """One setting as the outside sees it: name, kind, default, help, group, variable."""

    name: str
    kind: Kind
    optional: bool  # None is a valid value (unset)
    default: Any
    help: str
    group: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "SSEHUB_" + self.name.upper()

    def parse(self, raw: str) -> Any:
        """The value of ``raw`` text (an environment variable) for this setting."""
        if self.kind is Kind.FLAG:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if self.kind is Kind.INT:
            return int(raw)
        if self.kind is Kind.FLOAT:
            return float(raw)
        if self.kind is Kind.LIST:
            return split_list(raw)
        return raw


def split_list(raw: str) -> tuple[str, ...]:
    """``a, b,,c`` → ``("a", "b", "c")``."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _option(f: Field[Any]) -> Option:
    annotation = str(f.type)
    base, optional = annotation.removesuffix(" | None"), annotation.endswith(" | None")
    default = f.default if f.default is not MISSING else None
    return Option(f.name, _KINDS[base], optional, default, f.metadata["help"], f.metadata["group"])


OPTIONS: tuple[Option, ...] = tuple(_option(f) for f in fields(Settings))
"""Every setting, in declaration order: the one place annotations become kinds."""


def from_env(environ: Mapping[str, str], **overrides: Any) -> Settings:
    """Settings from ``SSEHUB_<NAME>`` variables (``SSEHUB_JWT_KEY`` sets both keys)."""
    values: dict[str, Any] = {}
    both = environ.get("SSEHUB_JWT_KEY")
    if both:
        values["publisher_jwt_key"] = values["subscriber_jwt_key"] = both
    for option in OPTIONS:
        raw = environ.get(option.env)
        if raw is not None:
            try:
                values[option.name] = option.parse(raw)
            except ValueError:
                raise ValueError(
                    f"{option.env}={raw!r} is not a valid {option.kind.value}"
                ) from None
    values.update(overrides)
    return Settings(**values)
