"""The ``ssehub`` command; its ``serve`` options are made from the fields of Settings."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import sys
from typing import Any

import jwt
import rich_click as click
from jwt.algorithms import get_default_algorithms

from ..settings import Settings
from .bench_command import bench
from .group import debug_option, main
from .options import (
    env_name,
    hmac_algorithm,
    print_first_run,
    settings_options,
    shown_store,
)
from .reach import reaching, url_option

main.add_command(bench)


@main.command()
@debug_option
@click.option(
    "--jwt-key",
    envvar=env_name("jwt_key"),
    help="Key for both publishers and subscribers (same forms as the keys below).",
)
@settings_options
@click.option(
    "--log-level",
    default="info",
    envvar=env_name("log_level"),
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(jwt_key: str | None, log_level: str, **options: Any) -> None:
    """Run the hub until interrupted (SIGINT or SIGTERM drain it cleanly).

    With no key given it makes a random one, prints ready tokens, and serves the demo at /.
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    options = {k: v for k, v in options.items() if v is not None and v != ()}
    options.setdefault("publisher_jwt_key", jwt_key)
    options.setdefault("subscriber_jwt_key", jwt_key)
    made_key = None
    if options["publisher_jwt_key"] is None and options["subscriber_jwt_key"] is None:
        if not hmac_algorithm(options.get("jwt_algorithm", "HS256")):
            raise click.UsageError(
                "with --jwt-algorithm "
                f"{options['jwt_algorithm']} give the key that verifies tokens (--jwt-key"
                " @public.pem, or a JWKS): the key made when none is given is an HMAC secret"
            )
        made_key = secrets.token_urlsafe(64)  # long enough for HS512
        options["publisher_jwt_key"] = options["subscriber_jwt_key"] = made_key
    options.setdefault("demo", made_key is not None)
    settings = Settings(**options)

    def started(sockets: list[socket.socket]) -> None:
        if made_key is not None:  # only once it listens: a failed start says one thing
            print_first_run(settings, made_key)
        for sock in sockets:
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
            scheme = "https" if settings.certfile else "http"
            url = f"{scheme}://{shown}:{port}/.well-known/mercure"
            click.echo(f"ssehub listening on {url}", err=True)
        auth = f"JWT {settings.jwt_algorithm}, anonymous subscribers " + (
            "allowed" if settings.anonymous else "refused"
        )
        age = f"{settings.history_max_age:g}s" if settings.history_max_age else "no age limit"
        workers = f", {settings.workers} workers" if settings.workers > 1 else ""
        click.echo(
            f"  store: {shown_store(settings.store)} (history {settings.history_size} events, "
            f"{age}{workers}); {auth}; heartbeat {settings.heartbeat:g}s; "
            f"demo page {'on' if settings.demo else 'off'}",
            err=True,
        )

    from ..server import run

    run(settings, started=started)


@main.command()
@debug_option
@url_option("The hub's URL.")
@click.option(
    "--topic",
    "topics",
    multiple=True,
    required=True,
    help="Topic (repeat: the first is canonical, the others alternates).",
)
@click.option("--data", default=None, help="The update; read from standard input if omitted.")
@click.option("--token", envvar="SSEHUB_TOKEN", help="Publisher JWT.")
@click.option("--private", is_flag=True, help="Only for subscribers authorized for a topic.")
@click.option("--id", "event_id", help="The event id (the hub makes one if omitted).")
@click.option("--type", "event_type", help="The SSE event type.")
@click.option("--retry", type=click.IntRange(min=0), help="The SSE retry field (ms).")
def publish(
    url: str,
    topics: tuple[str, ...],
    data: str | None,
    token: str | None,
    private: bool,
    event_id: str | None,
    event_type: str | None,
    retry: int | None,
) -> None:
    """Publish one update to any Mercure hub and print its id."""
    from ..client import publish as send

    body = sys.stdin.read().removesuffix("\n") if data is None else data
    with reaching(url):
        got = asyncio.run(
            send(
                url,
                topics,
                body,
                token=token,
                private=private,
                id=event_id,
                type=event_type,
                retry=retry,
            )
        )
    click.echo(got)


@main.command()
@debug_option
@url_option("The hub's URL.")
@click.option(
    "--topic",
    "topics",
    multiple=True,
    required=True,
    help="Topic selector: exact, URI template or * (repeatable).",
)
@click.option("--token", envvar="SSEHUB_TOKEN", help="Subscriber JWT.")
@click.option("--last-event-id", help="Resume after this id ('earliest': all history).")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
def subscribe(
    url: str,
    topics: tuple[str, ...],
    token: str | None,
    last_event_id: str | None,
    count: int | None,
) -> None:
    """Print events as JSON lines (id, type, data; a gap as {"gap": …}), reconnecting and
    resuming until interrupted."""
    from ..client import Gap, NotAStream
    from ..client import subscribe as listen

    async def run() -> None:
        seen = 0
        async for item in listen(
            url, topics, token=token, last_event_id=last_event_id, retry_first=False
        ):
            line: dict[str, object]
            if isinstance(item, Gap):
                line = {
                    "gap": {
                        "requested": item.requested,
                        "replayFrom": item.replay_from,
                        "reason": item.reason,
                    }
                }
            else:
                line = {"id": item.id, "type": item.event, "data": item.data}
            click.echo(json.dumps(line, ensure_ascii=False))
            if not isinstance(item, Gap):
                seen += 1
                if count is not None and seen >= count:
                    return

    try:
        with reaching(url):
            asyncio.run(run())
    except NotAStream as exc:
        raise click.ClickException(
            f"{url} answered {exc}, not an event stream: is --url the hub's /.well-known/mercure?"
        ) from None
    except KeyboardInterrupt:
        pass


@main.command()
@debug_option
@click.option(
    "--key",
    envvar="SSEHUB_JWT_KEY",
    required=True,
    help="HMAC secret, or @PATH of a PEM private key.",
)
@click.option(
    "--algorithm",
    default="HS256",
    show_default=True,
    type=click.Choice(sorted(set(get_default_algorithms()) - {"none"})),
)
@click.option("--publish", "publish_", multiple=True, help="Selector for mercure.publish.")
@click.option("--subscribe", "subscribe_", multiple=True, help="Selector for mercure.subscribe.")
@click.option("--expires-in", type=click.IntRange(min=1), help="Seconds until exp.")
@click.option("--claim", multiple=True, help="Extra claim NAME=VALUE (aud, iss, sub…).")
@click.option(
    "--audience",
    help="Mint a Mercure 1.0 access token (typ at+jwt, authorization_details) for the hub whose"
    " resource identifier is this URL; --publish/--subscribe are then exact matchers.",
)
@click.option(
    "--publish-urlpattern", multiple=True, help="Mercure 1.0: a URL pattern to publish to."
)
@click.option(
    "--subscribe-urlpattern", multiple=True, help="Mercure 1.0: a URL pattern to subscribe to."
)
def token(
    key: str,
    algorithm: str,
    publish_: tuple[str, ...],
    subscribe_: tuple[str, ...],
    expires_in: int | None,
    claim: tuple[str, ...],
    audience: str | None,
    publish_urlpattern: tuple[str, ...],
    subscribe_urlpattern: tuple[str, ...],
) -> None:
    """Mint a JWT for publishers and subscribers (0.x), or a 1.0 access token (--audience)."""
    from ..access_tokens import mint_access_token
    from ..auth import mint_token

    claims: dict[str, object] = {}
    for item in claim:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--claim")
        claims[name] = value
    if (publish_urlpattern or subscribe_urlpattern) and audience is None:
        raise click.UsageError("URL patterns are Mercure 1.0 grants: give --audience too")
    try:
        if audience is not None:
            minted = mint_access_token(
                key,
                audience,
                publish=[*publish_, *(("urlpattern", p) for p in publish_urlpattern)],
                subscribe=[*subscribe_, *(("urlpattern", p) for p in subscribe_urlpattern)],
                expires_in=expires_in or 3600,  # RFC 9068 requires exp
                algorithm=algorithm,
                claims=claims,
            )
        else:
            minted = mint_token(
                key,
                publish=publish_,
                subscribe=subscribe_,
                expires_in=expires_in,
                algorithm=algorithm,
                claims=claims,
            )
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text (a PEM key is)"
        raise click.ClickException(f"--key {key}: cannot read {key[1:]!r}: {reason}") from None
    except (jwt.InvalidKeyError, ValueError, TypeError, AttributeError) as exc:
        # PyJWT lets a public key reach cryptography, which has no sign() on it
        why = "a public key cannot sign" if isinstance(exc, AttributeError) else exc
        raise click.BadParameter(
            f"this key cannot sign {algorithm} ({why}): an HS algorithm takes a secret, the"
            " others a PEM private key (@PATH)",
            param_hint="'--key' / '--algorithm'",
        ) from None
    click.echo(minted)


__all__ = ["main"]
