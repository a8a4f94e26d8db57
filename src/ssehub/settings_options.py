"""Settings as the outside sees them: each field of ``Settings`` as a CLI option, an
environment variable and a row of the docs table, with its kind and how text parses."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, fields
from typing import Any

from .settings import Settings
from .settings_checks import InvalidSetting

__all__ = ["OPTIONS", "Kind", "Option", "from_env", "split_list"]


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
            return _number(self.name, raw, int)
        if self.kind is Kind.FLOAT:
            return _number(self.name, raw, float)
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
            values[option.name] = option.parse(raw)
    values.update(overrides)
    return Settings(**values)


def _number(name: str, raw: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise InvalidSetting(name, f"SSEHUB_{name.upper()}={raw!r} is not {what}") from None
