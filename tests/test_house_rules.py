"""The house's rules on the code's shape, checked over the sources: rooms of a size a reader
can hold (a module of at most 400 lines, a class of at most 250) and tests that wait on
conditions rather than clocks (no sleep of more than 0.2 s)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE_MAX, CLASS_MAX, SLEEP_MAX = 400, 250, 0.2


def _sources(*parts: str) -> list[Path]:
    return sorted(ROOT.joinpath(*parts).rglob("*.py"))


def test_modules_and_classes_stay_within_the_size_rule() -> None:
    oversized = []
    for path in _sources("src", "ssehub"):
        text = path.read_text()
        name = path.relative_to(ROOT)
        if (lines := len(text.splitlines())) > MODULE_MAX:
            oversized.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > CLASS_MAX:
                    oversized.append(f"{name}: class {node.name} {size} lines")
    assert oversized == []


def _sleeps(tree: ast.AST) -> list[tuple[int, float]]:
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        arg = node.args[0]
        value = arg.value if isinstance(arg, ast.Constant) else None
        if name == "sleep" and isinstance(value, int | float) and value > SLEEP_MAX:
            found.append((node.lineno, float(value)))
    return found


def test_no_test_sleeps_longer_than_a_fifth_of_a_second() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{line}: sleep({seconds})"
        for path in _sources("tests")
        for line, seconds in _sleeps(ast.parse(path.read_text()))
    ]
    assert long == []


def test_the_sleep_rule_sees_a_long_sleep() -> None:
    # The rule itself can fail: a module that sleeps a second is caught, 0.2 s is not.
    tree = ast.parse(
        "import asyncio, time\nasync def f():\n    await asyncio.sleep(1.0)\n    time.sleep(0.2)\n"
    )
    assert _sleeps(tree) == [(3, 1.0)]
