"""The import layers of docs/architecture.md: no upward import, no cycle (type-only imports
included: a cycle for mypy is still a cycle for a reader)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "ssehub"

# Lowest first; a module may import its own layer or lower ones.
LAYERS: list[tuple[str, set[str]]] = [
    ("configuration", {"settings_checks", "settings", "settings_options"}),
    ("wire", {"sse", "templates", "matchers", "topics", "mercure", "errors", "events"}),
    ("security", {"tokens", "keys", "auth", "access_tokens", "dialects"}),
    (
        "engine",
        {
            "contract",
            "budgets",
            "subscriber",
            "commits",
            "routes",
            "views",
            "history",
            "fanout",
            "announcements",
            "hub",
        },
    ),
    ("backends", {"backends"}),
    ("application", {"app", "subscriptions", "metrics"}),
    (
        "faces",
        {"server", "asgi", "responses", "client", "publisher", "contrib", "bench", "config_docs"},
    ),
    ("command", {"cli", "__init__"}),
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for number, (_, members) in enumerate(LAYERS):
        if top in members:
            return number
    raise AssertionError(f"ssehub.{module} is in no layer: add it to LAYERS and the docs")


def _imports(path: Path, module: str) -> set[str]:
    """ssehub modules imported by ``path``, at run time or for type checking."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("ssehub"):
                target = node.module.removeprefix("ssehub").lstrip(".")
            else:
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}" if target else alias.name
                known = (SRC / Path(*candidate.split("."))).with_suffix(".py").exists() or (
                    SRC / Path(*candidate.split("."))
                ).is_dir()
                found.add(candidate if known else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ssehub."):
                    found.add(alias.name.removeprefix("ssehub."))
    found.discard("")
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in SRC.rglob("*.py"):
        module = _module(path) if path != SRC / "__init__.py" else "__init__"
        graph[module] = _imports(path, module) - {module}
    return graph


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    graph = _graph()
    # A package's __init__ re-exporting its own modules is not a cycle of meaning.
    for module in graph:
        graph[module] = {t for t in graph[module] if not t.startswith(module + ".")}
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []
