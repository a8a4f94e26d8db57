"""The ``serve`` options, made from the fields of Settings, and what ``serve`` prints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import jwt
import rich_click as click
from rich_click.utils import OptionGroupDict

from ..settings import Settings
from ..settings_options import OPTIONS, Kind, split_list

DEFAULT_URL = "http://127.0.0.1:8000/.well-known/mercure"

_TYPES: dict[Kind, Any] = {
    Kind.TEXT: str,
    Kind.INT: click.IntRange(min=0),
    Kind.FLOAT: click.FloatRange(min=0),
}


def env_name(name: str) -> str:
    """The environment variable that sets a setting."""
    return "SSEHUB_" + name.upper()


def _comma_list(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    return tuple(part for item in value for part in split_list(item))


def settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``command`` with one option per Settings field (help, default, env var)."""
    for setting in reversed(OPTIONS):
        flag = setting.flag
        common: dict[str, Any] = {"envvar": setting.env, "help": setting.help}
        if setting.kind is Kind.FLAG:
            option = click.option(f"{flag}/--no-{flag[2:]}", default=None, **common)
        elif setting.kind is Kind.LIST:
            option = click.option(flag, multiple=True, callback=_comma_list, **common)
        else:
            shown = setting.default
            option = click.option(
                flag,
                type=_TYPES[setting.kind],
                default=shown,
                show_default=shown is not None,
                **common,
            )
        command = option(command)
    return command


def option_groups() -> list[OptionGroupDict]:
    """``serve --help`` in panels, one per Settings group."""
    panels: dict[str, list[str]] = {}
    for setting in OPTIONS:
        panels.setdefault(setting.group, []).append(setting.flag)
    panels["auth"].insert(0, "--jwt-key")
    return [
        OptionGroupDict(name=name.capitalize(), options=options) for name, options in panels.items()
    ]


click.rich_click.OPTION_GROUPS = {"ssehub serve": option_groups()}


def setting_hint(name: str) -> str:
    """How a Settings field is set: ``'--flag' / SSEHUB_NAME``."""
    return f"'--{name.replace('_', '-')}' / {env_name(name)}"


def shown_store(store: str) -> str:
    """The store URL without a password."""
    password = urlsplit(store).password
    return store.replace(f":{password}@", ":***@") if password else store


def hmac_algorithm(algorithms: str) -> str | None:
    """The first HMAC algorithm allowed, the only kind a made-up secret can sign with."""
    return next((a.strip() for a in algorithms.split(",") if a.strip().startswith("HS")), None)


def print_first_run(settings: Settings, key: str) -> None:
    algorithm = hmac_algorithm(settings.jwt_algorithm) or "HS256"
    publisher = jwt.encode({"mercure": {"publish": ["*"]}}, key, algorithm=algorithm)
    subscriber = jwt.encode({"mercure": {"subscribe": ["*"]}}, key, algorithm=algorithm)
    click.echo(
        "No JWT key given: made a random one for this run (set --jwt-key to keep one).", err=True
    )
    click.echo(f"  publisher token:  {publisher}", err=True)
    click.echo(f"  subscriber token: {subscriber}", err=True)
    click.echo(
        f"  try: curl -d topic=hello -d data=hi -H 'Authorization: Bearer {publisher}' "
        f"{'https' if settings.certfile else 'http'}://{settings.host}:{settings.port}"
        "/.well-known/mercure",
        err=True,
    )
