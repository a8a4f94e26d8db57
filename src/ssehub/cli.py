"""The ``ssehub`` command."""

from __future__ import annotations

import logging
import secrets
import socket
import sys
from typing import Any

import click
import jwt

from . import __version__
from .settings import Settings

_KEY_HELP = "HMAC secret (or key) that verifies {who} JWTs."


def _env(name: str) -> str:
    return "SSEHUB_" + name.upper()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="ssehub")
def main() -> None:
    """ssehub: a Server-Sent Events push hub speaking the Mercure protocol."""


@main.command()
@click.option("--host", default="127.0.0.1", envvar=_env("host"), help="Address to listen on.")
@click.option("--port", default=8000, type=int, envvar=_env("port"), help="Port to listen on.")
@click.option(
    "--store",
    default="memory",
    envvar=_env("store"),
    help="Where history lives: memory, sqlite:PATH (durable), redis://HOST:PORT/DB "
    "(shared by several hubs; ?prefix=NAME picks the keys).",
)
@click.option(
    "--workers",
    default=1,
    type=click.IntRange(min=1),
    envvar=_env("workers"),
    help="Processes sharing the port (SO_REUSEPORT); needs a shared --store.",
)
@click.option("--jwt-key", envvar=_env("jwt_key"), help="Key for both publishers and subscribers.")
@click.option(
    "--publisher-jwt-key", envvar=_env("publisher_jwt_key"), help=_KEY_HELP.format(who="publisher")
)
@click.option(
    "--subscriber-jwt-key",
    envvar=_env("subscriber_jwt_key"),
    help=_KEY_HELP.format(who="subscriber"),
)
@click.option(
    "--jwt-algorithm",
    default="HS256",
    envvar=_env("jwt_algorithm"),
    help="JWS algorithm tokens must be signed with.",
)
@click.option(
    "--anonymous/--no-anonymous",
    default=False,
    envvar=_env("anonymous"),
    help="Let subscribers without a token receive public updates.",
)
@click.option(
    "--heartbeat",
    default=15.0,
    type=float,
    envvar=_env("heartbeat"),
    help="Seconds between keep-alive comments on streams; 0 disables.",
)
@click.option(
    "--retry",
    type=click.IntRange(min=0),
    envvar=_env("retry"),
    help="Reconnection time (ms) sent to subscribers as the SSE retry field.",
)
@click.option(
    "--history-size",
    default=10_000,
    type=click.IntRange(min=0),
    envvar=_env("history_size"),
    help="Events kept for replay; 0 keeps none.",
)
@click.option(
    "--history-max-age",
    default=0.0,
    type=click.FloatRange(min=0),
    envvar=_env("history_max_age"),
    help="Seconds an event stays in history; 0: no limit.",
)
@click.option(
    "--max-write-buffer",
    default=1 << 20,
    type=click.IntRange(min=1024),
    envvar=_env("max_write_buffer"),
    help="Unsent bytes past which a slow subscriber is closed (it resumes later).",
)
@click.option(
    "--max-body-size",
    default=1 << 20,
    type=click.IntRange(min=1),
    envvar=_env("max_body_size"),
    help="Largest publish body, in bytes (413 above).",
)
@click.option(
    "--max-topics",
    default=100,
    type=click.IntRange(min=1),
    envvar=_env("max_topics"),
    help="Most topic selectors in one subscription.",
)
@click.option(
    "--demo/--no-demo",
    default=None,
    envvar=_env("demo"),
    help="Serve the demo page and clock at /. Default: on when serve made its own key.",
)
@click.option(
    "--log-level",
    default="info",
    envvar=_env("log_level"),
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(jwt_key: str | None, demo: bool | None, log_level: str, **options: Any) -> None:
    """Run the hub (in memory) until interrupted."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    options["publisher_jwt_key"] = options["publisher_jwt_key"] or jwt_key
    options["subscriber_jwt_key"] = options["subscriber_jwt_key"] or jwt_key
    made_key = None
    if options["publisher_jwt_key"] is None and options["subscriber_jwt_key"] is None:
        made_key = secrets.token_urlsafe(32)
        options["publisher_jwt_key"] = options["subscriber_jwt_key"] = made_key
    try:
        settings = Settings(demo=made_key is not None if demo is None else demo, **options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if made_key is not None:
        _print_first_run(settings, made_key)

    def started(sockets: list[socket.socket]) -> None:
        for sock in sockets:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
            click.echo(f"ssehub listening on http://{shown}:{port}/.well-known/mercure", err=True)
        auth = f"JWT {settings.jwt_algorithm}, anonymous subscribers " + (
            "allowed" if settings.anonymous else "refused"
        )
        age = f"{settings.history_max_age:g}s" if settings.history_max_age else "no age limit"
        workers = f", {settings.workers} workers" if settings.workers > 1 else ""
        click.echo(
            f"  store: {_shown_store(settings.store)} (history {settings.history_size} events, "
            f"{age}{workers}); {auth}; "
            f"heartbeat {settings.heartbeat:g}s; demo page {'on' if settings.demo else 'off'}",
            err=True,
        )

    from .server import run

    run(settings, started=started)


def _shown_store(store: str) -> str:
    """The store URL without a password."""
    from urllib.parse import urlsplit

    parts = urlsplit(store)
    if parts.password:
        return store.replace(f":{parts.password}@", ":***@")
    return store


def _print_first_run(settings: Settings, key: str) -> None:
    publisher = jwt.encode({"mercure": {"publish": ["*"]}}, key, algorithm=settings.jwt_algorithm)
    subscriber = jwt.encode(
        {"mercure": {"subscribe": ["*"]}}, key, algorithm=settings.jwt_algorithm
    )
    click.echo(
        "No JWT key given: made a random one for this run (set --jwt-key to keep one).", err=True
    )
    click.echo(f"  publisher token:  {publisher}", err=True)
    click.echo(f"  subscriber token: {subscriber}", err=True)
    click.echo(
        f"  try: curl -d topic=hello -d data=hi -H 'Authorization: Bearer {publisher}' "
        f"http://{settings.host}:{settings.port}/.well-known/mercure",
        err=True,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
