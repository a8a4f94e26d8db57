"""Reaching a hub from the command line: URL checks, and one line for a hub that does not
answer or answers with a server error."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import rich_click as click

from ..errors import HubClientError, HubRefused

if TYPE_CHECKING:
    import httpx
from .options import DEFAULT_URL


def url_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--url`` (or ``SSEHUB_URL``): the hub a command reaches, checked by ``hub_url``."""
    return click.option(
        "--url",
        default=DEFAULT_URL,
        envvar="SSEHUB_URL",
        show_default=True,
        callback=hub_url,
        help=help,
    )


def hub_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A hub URL must be absolute http(s): httpx's own complaint comes too late and vaguely."""
    if value is None:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(
            f"{value!r} is not an http(s) URL: write e.g. {DEFAULT_URL}", ctx, param
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}", ctx, param) from None
    return value


def root_reason(exc: BaseException) -> str:
    """The operating system's reason under an httpx error ("Connection refused")."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno and seen.errno > 0:
            return os.strerror(seen.errno)  # asyncio rewrites strerror as "Connect call failed"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def reaching(url: str, refused: str = "the hub refused") -> Iterator[None]:
    """What reaching the hub at ``url`` may raise, as one line for the command: its refusal
    (a 4xx, worded ``refused: reason``), its trouble (a 5xx) or its silence."""
    import httpx  # here, not at the top: serve never loads it

    try:
        yield
    except HubRefused as exc:
        raise click.ClickException(f"{refused}: {exc}") from None
    except (httpx.HTTPError, HubClientError) as exc:
        raise unreachable(url, exc) from None


def unreachable(url: str, exc: httpx.HTTPError | HubClientError) -> click.ClickException:
    """One line for a hub that did not answer, or answered with a server error."""
    import httpx

    if isinstance(exc, HubClientError):  # a 5xx with the hub's reason, or no answer
        said = f"answered {exc}" if exc.status is not None else f"could not be reached: {exc}"
        return click.ClickException(f"the hub at {url} {said}")
    if isinstance(exc, httpx.HTTPStatusError):
        answer = exc.response
        reason = " ".join(answer.text.split())[:300] or answer.reason_phrase
        return click.ClickException(f"the hub at {url} answered {answer.status_code}: {reason}")
    if isinstance(exc, httpx.ConnectError):
        return click.ClickException(
            f"could not reach {url}: nothing answers there ({root_reason(exc)}): is the hub"
            " running, and is --url right?"
        )
    if isinstance(exc, httpx.TimeoutException):
        return click.ClickException(f"could not reach {url}: no answer in time ({exc!r})")
    return click.ClickException(f"could not reach {url}: {exc or type(exc).__name__}")
