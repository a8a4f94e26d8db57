"""docs/configuration.md, generated from Settings: ``python -m ssehub.config_docs``."""

from __future__ import annotations

import sys

from .settings_options import OPTIONS, Kind

_HEAD = """# Configuration reference

Generated from `ssehub.Settings` by `python -m ssehub.config_docs > docs/configuration.md`
(a test fails when this file is out of date). Every setting is a `ssehub serve` option and an
environment variable; `--jwt-key` / `SSEHUB_JWT_KEY` sets both keys at once. The ASGI app
reads the same variables (`uvicorn --factory ssehub.asgi:from_env`), and Python code passes
them to `Settings(...)`.
"""


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ", ".join(value) or "none"
    return f"`{value}`"


def render() -> str:
    """The whole page."""
    out = [_HEAD]
    group = None
    for option in OPTIONS:
        if option.group != group:
            group = option.group
            out.append(f"\n## {group.capitalize()}\n")
            out.append("| option | environment | default | meaning |")
            out.append("|---|---|---|---|")
        flag = option.flag
        if option.kind is Kind.FLAG:
            flag += f" / --no-{flag[2:]}"
        out.append(f"| `{flag}` | `{option.env}` | {_shown(option.default)} | {option.help} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
