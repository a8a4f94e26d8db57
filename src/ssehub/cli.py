"""The ``ssehub`` command; its ``serve`` options are made from the fields of Settings."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx
import jwt
import rich_click as click
from jwt.algorithms import get_default_algorithms
from rich_click.utils import OptionGroupDict

from . import __version__
from .errors import ConfigError
from .publisher import HubClientError
from .settings import InvalidSetting, Settings

_TYPES: dict[str, Any] = {
    "str": str,
    "str | None": str,
    "int": click.IntRange(min=0),
    "int | None": click.IntRange(min=0),
    "float": click.FloatRange(min=0),
}


def env_name(name: str) -> str:
    """The environment variable that sets a setting."""
    return "SSEHUB_" + name.upper()


def _comma_list(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    return tuple(part.strip() for item in value for part in item.split(",") if part.strip())


def settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``command`` with one option per Settings field (help, default, env var)."""
    for f in reversed(fields(Settings)):
        flag = "--" + f.name.replace("_", "-")
        common: dict[str, Any] = {"envvar": env_name(f.name), "help": f.metadata["help"]}
        if f.type == "bool":
            option = click.option(f"{flag}/--no-{flag[2:]}", default=None, **common)
        elif f.type == "tuple[str, ...]":
            option = click.option(flag, multiple=True, callback=_comma_list, **common)
        else:
            shown = f.default if f.default is not None else None
            option = click.option(
                flag,
                type=_TYPES[str(f.type)],
                default=shown,
                show_default=shown is not None,
                **common,
            )
        command = option(command)
    return command


def _option_groups() -> list[OptionGroupDict]:
    """``serve --help`` in panels, one per Settings group."""
    panels: dict[str, list[str]] = {}
    for f in fields(Settings):
        panels.setdefault(f.metadata["group"], []).append("--" + f.name.replace("_", "-"))
    panels["auth"].insert(0, "--jwt-key")
    return [
        OptionGroupDict(name=name.capitalize(), options=options) for name, options in panels.items()
    ]


click.rich_click.OPTION_GROUPS = {"ssehub serve": _option_groups()}


class _Main(click.RichGroup):
    """The ``ssehub`` group: every error leaves as one line on stderr, exit 2 for usage
    errors and 1 for the rest; ``--debug`` (or ``SSEHUB_DEBUG=1``) adds the traceback."""

    debug = False

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        self.debug = os.environ.get("SSEHUB_DEBUG", "").strip().lower() in _TRUE
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            _fail(exc.format_message(), exc.exit_code, self.debug)
        except InvalidSetting as exc:
            _fail(f"Invalid value for {_setting_hint(exc.name)}: {exc.reason}", 2, self.debug)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code, self.debug)
        except click.Abort:
            _fail("Aborted!", 1, self.debug)
        except ConfigError as exc:
            _fail(str(exc), 1, self.debug)
        except Exception as exc:
            _fail(
                f"unexpected {type(exc).__name__}: {exc} (a bug: rerun with --debug and report"
                " the traceback)",
                1,
                self.debug,
            )
        sys.exit(code if isinstance(code, int) else 0)


_TRUE = ("1", "true", "yes", "on")


def _fail(message: str, code: int, debug: bool) -> NoReturn:
    """Print one line (after the traceback, with --debug) and exit."""
    if debug:
        traceback.print_exc()
    line = " ".join(message.split())
    click.echo(f"{click.style('Error:', fg='red', bold=True)} {line}", err=True)
    sys.exit(code)


def _setting_hint(name: str) -> str:
    """How a Settings field is set: ``'--flag' / SSEHUB_NAME``."""
    return f"'--{name.replace('_', '-')}' / {env_name(name)}"


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        root = ctx.find_root().command
        if isinstance(root, _Main):
            root.debug = True


def debug_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--debug``, accepted before or after the subcommand."""
    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_debug,
        help="On an error, also print the traceback (for a bug report); or SSEHUB_DEBUG=1.",
    )(command)


@click.group(
    cls=_Main,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="ssehub")
@debug_option
def main() -> None:
    """ssehub: a Server-Sent Events push hub speaking the Mercure protocol."""


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
        if not _hmac_algorithm(options.get("jwt_algorithm", "HS256")):
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
            _print_first_run(settings, made_key)
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
            f"  store: {_shown_store(settings.store)} (history {settings.history_size} events, "
            f"{age}{workers}); {auth}; heartbeat {settings.heartbeat:g}s; "
            f"demo page {'on' if settings.demo else 'off'}",
            err=True,
        )

    from .server import run

    run(settings, started=started)


_DEFAULT_URL = "http://127.0.0.1:8000/.well-known/mercure"


def _hub_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A hub URL must be absolute http(s): httpx's own complaint comes too late and vaguely."""
    if value is None:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(
            f"{value!r} is not an http(s) URL: write e.g. {_DEFAULT_URL}", ctx, param
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}", ctx, param) from None
    return value


def _root_reason(exc: BaseException) -> str:
    """The operating system's reason under an httpx error ("Connection refused")."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno and seen.errno > 0:
            return os.strerror(seen.errno)  # asyncio rewrites strerror as "Connect call failed"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


def _unreachable(url: str, exc: httpx.HTTPError | HubClientError) -> click.ClickException:
    """One line for a hub that did not answer, or answered with a server error."""
    if isinstance(exc, HubClientError):  # a 5xx with the hub's reason, or no answer
        said = f"answered {exc}" if exc.status is not None else f"could not be reached: {exc}"
        return click.ClickException(f"the hub at {url} {said}")
    if isinstance(exc, httpx.HTTPStatusError):
        answer = exc.response
        reason = " ".join(answer.text.split())[:300] or answer.reason_phrase
        return click.ClickException(f"the hub at {url} answered {answer.status_code}: {reason}")
    if isinstance(exc, httpx.ConnectError):
        return click.ClickException(
            f"could not reach {url}: nothing answers there ({_root_reason(exc)}): is the hub"
            " running, and is --url right?"
        )
    if isinstance(exc, httpx.TimeoutException):
        return click.ClickException(f"could not reach {url}: no answer in time ({exc!r})")
    return click.ClickException(f"could not reach {url}: {exc or type(exc).__name__}")


@main.command()
@debug_option
@click.option(
    "--url",
    default=_DEFAULT_URL,
    envvar="SSEHUB_URL",
    show_default=True,
    callback=_hub_url,
    help="The hub's URL.",
)
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
    from .client import HubRefused
    from .client import publish as send

    body = sys.stdin.read().removesuffix("\n") if data is None else data
    try:
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
    except HubRefused as refused:
        raise click.ClickException(f"the hub refused: {refused}") from None
    except (httpx.HTTPError, HubClientError) as exc:
        raise _unreachable(url, exc) from None
    click.echo(got)


@main.command()
@debug_option
@click.option(
    "--url",
    default=_DEFAULT_URL,
    envvar="SSEHUB_URL",
    show_default=True,
    callback=_hub_url,
    help="The hub's URL.",
)
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
    from .client import Gap, HubRefused, NotAStream
    from .client import subscribe as listen

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
        asyncio.run(run())
    except HubRefused as refused:
        raise click.ClickException(f"the hub refused: {refused}") from None
    except NotAStream as exc:
        raise click.ClickException(
            f"{url} answered {exc}, not an event stream: is --url the hub's /.well-known/mercure?"
        ) from None
    except httpx.HTTPError as exc:
        raise _unreachable(url, exc) from None
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
def token(
    key: str,
    algorithm: str,
    publish_: tuple[str, ...],
    subscribe_: tuple[str, ...],
    expires_in: int | None,
    claim: tuple[str, ...],
) -> None:
    """Mint a JWT for publishers and subscribers."""
    from .auth import mint_token

    claims: dict[str, object] = {}
    for item in claim:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--claim")
        claims[name] = value
    try:
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


@main.command()
@debug_option
@click.option(
    "--url",
    default=_DEFAULT_URL,
    envvar="SSEHUB_URL",
    show_default=True,
    callback=_hub_url,
    help="The Mercure hub to load.",
)
@click.option("--topic", default="urn:ssehub:bench", show_default=True)
@click.option("--token", envvar="SSEHUB_TOKEN", help="Publisher JWT (Mercure mode).")
@click.option("--subscriber-token", help="Subscriber JWT, if the hub refuses anonymous ones.")
@click.option(
    "--raw-subscribe", metavar="URL", callback=_hub_url, help="Raw mode: any SSE stream URL."
)
@click.option(
    "--raw-publish", metavar="URL", callback=_hub_url, help="Raw mode: POST the data here."
)
@click.option("--subscribers", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--client-procs",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Subscriber processes, when one cannot keep up.",
)
@click.option(
    "--rate",
    "rates",
    multiple=True,
    type=click.FloatRange(min=0),
    default=[0.0],
    show_default=True,
    help="Events/s (0: as fast as answers come). Repeat to sweep.",
)
@click.option(
    "--window",
    default=64,
    show_default=True,
    type=click.IntRange(min=1),
    help="Requests in flight per conn.",
)
@click.option(
    "--conns",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Publisher connections.",
)
@click.option(
    "--payload",
    default=100,
    show_default=True,
    type=click.IntRange(min=20),
    help="Bytes of data per event (20 carry the send time).",
)
@click.option(
    "--duration",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds measured per run.",
)
@click.option(
    "--warmup",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds before measuring.",
)
@click.option(
    "--http",
    type=click.Choice(["1.1", "1.0", "2"]),
    default="1.1",
    show_default=True,
    help="Subscribers' protocol: 1.1 (chunked), 1.0 (close-delimited), 2 (h2c prior knowledge:"
    " serve with --http2).",
)
@click.option(
    "--streams-per-connection",
    default=100,
    show_default=True,
    type=click.IntRange(min=1, max=128),
    help="HTTP/2: subscribers sharing one connection.",
)
@click.option("--hub-pid", type=int, help="The hub's PID: CPU and RSS per connection.")
@click.option("--load-cpu", type=click.IntRange(min=0), help="Pin the load to this CPU.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, writable=True), help="Write results."
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write a PNG: latency CDF, delivered against offered rate (needs matplotlib).",
)
def bench(
    url: str,
    topic: str,
    token: str | None,
    subscriber_token: str | None,
    raw_subscribe: str | None,
    raw_publish: str | None,
    subscribers: int,
    client_procs: int,
    rates: tuple[float, ...],
    window: int,
    conns: int,
    payload: int,
    duration: float,
    warmup: float,
    http: str,
    streams_per_connection: int,
    hub_pid: int | None,
    load_cpu: int | None,
    json_path: str | None,
    plot_path: str | None,
) -> None:
    """Load a hub (ssehub, any Mercure hub, or any SSE server in raw mode) and measure
    deliveries/s, delivery ratio, latency and connect rate."""
    import dataclasses
    import resource
    from pathlib import Path

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from . import bench as load

    _check_bench_options(hub_pid, load_cpu, json_path, plot_path)
    pids: tuple[int, ...] = ()
    if hub_pid is not None:
        children = Path(f"/proc/{hub_pid}/task/{hub_pid}/children")
        extra = children.read_text().split() if children.exists() else []
        pids = (hub_pid, *map(int, extra))
    if raw_subscribe or raw_publish:
        if not (raw_subscribe and raw_publish):
            raise click.BadParameter("raw mode needs both --raw-subscribe and --raw-publish")
        target = load.Target.raw(raw_subscribe, raw_publish, pids)
    else:
        if token is None:
            raise click.BadParameter("a Mercure hub needs --token (a publisher JWT)")
        _check_hub(url, topic, token)
        target = load.Target.mercure(url, topic, token, pids)
        if subscriber_token:
            target = dataclasses.replace(
                target, subscribe_path=target.subscribe_path + f"&authorization={subscriber_token}"
            )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        for rate in rates:
            label = f"{subscribers} subscribers @ {'max' if not rate else f'{rate:g}/s'}"
            task = progress.add_task(label, total=1.0)

            def tick(phase: str, fraction: float, task: Any = task, label: str = label) -> None:
                progress.update(task, completed=fraction, description=f"{label}: {phase}")

            options = load.Options(
                subscribers,
                client_procs,
                rate,
                window,
                conns,
                payload,
                duration,
                warmup,
                load_cpu,
                http,
                streams_per_connection,
            )
            try:
                results.append(asyncio.run(load.run(target, options, tick)))
            except load.BenchError as exc:
                raise click.ClickException(str(exc)) from None
            progress.remove_task(task)
    for result in results:
        click.echo(load.report(result))
    if json_path:
        rows = [
            {k: v for k, v in dataclasses.asdict(r).items() if k != "latency_samples"}
            for r in results
        ]
        Path(json_path).write_text(json.dumps(rows, indent=2))
    if plot_path:
        load.plot(results, Path(plot_path))


def _check_bench_options(
    hub_pid: int | None, load_cpu: int | None, json_path: str | None, plot_path: str | None
) -> None:
    """What would otherwise fail only after the whole run (or in a child process)."""
    if hub_pid is not None and not os.path.exists(f"/proc/{hub_pid}"):
        raise click.BadParameter(f"no process {hub_pid} here", param_hint="'--hub-pid'")
    if load_cpu is not None and load_cpu not in os.sched_getaffinity(0):
        usable = ", ".join(map(str, sorted(os.sched_getaffinity(0))))
        raise click.BadParameter(
            f"CPU {load_cpu} is not one this process may use ({usable})", param_hint="'--load-cpu'"
        )
    for hint, path in (("'--json'", json_path), ("'--plot'", plot_path)):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder is not None and not os.path.isdir(folder):
            raise click.BadParameter(f"the directory {folder} does not exist", param_hint=hint)
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.BadParameter(
                "plots need matplotlib: pip install matplotlib", param_hint="'--plot'"
            ) from None


def _check_hub(url: str, topic: str, token: str) -> None:
    """One publish before the load: an unreachable hub, a refused token or topic is then one
    line now rather than a run of errors."""
    from .client import HubRefused, publish

    try:
        asyncio.run(publish(url, topic, "ssehub bench: checking the hub", token=token))
    except HubRefused as refused:
        raise click.ClickException(f"the hub refused the bench's publish: {refused}") from None
    except (httpx.HTTPError, HubClientError) as exc:
        raise _unreachable(url, exc) from None


def _shown_store(store: str) -> str:
    """The store URL without a password."""
    password = urlsplit(store).password
    return store.replace(f":{password}@", ":***@") if password else store


def _hmac_algorithm(algorithms: str) -> str | None:
    """The first HMAC algorithm allowed, the only kind a made-up secret can sign with."""
    return next((a.strip() for a in algorithms.split(",") if a.strip().startswith("HS")), None)


def _print_first_run(settings: Settings, key: str) -> None:
    algorithm = _hmac_algorithm(settings.jwt_algorithm) or "HS256"
    publisher = jwt.encode({"mercure": {"publish": ["*"]}}, key, algorithm=algorithm)
    subscriber = jwt.encode({"mercure": {"subscribe": ["*"]}}, key, algorithm=algorithm)
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
