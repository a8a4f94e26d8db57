"""The ``ssehub`` group: one-line errors (exit 2 for usage, 1 for the rest) and ``--debug``."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import rich_click as click

from .. import __version__
from ..errors import ConfigError
from ..settings import InvalidSetting
from .options import setting_hint


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
            _fail(f"Invalid value for {setting_hint(exc.name)}: {exc.reason}", 2, self.debug)
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
