"""The import graph of the top-level packages, read with `ast` (every import, at module level or inside a
function): no package imports one above it, and no two packages import each other, directly or round a cycle.

From the bottom: settings; model (pure PyTorch); storage; workers; flows (the request flows) and supervisor
(`s2s up`, the whole service on one machine); ui and cli (the front ends). bench/, scripts/ and tests/ sit on top and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("settings", "model", "storage", "workers", "flows", "supervisor", "ui", "cli")
FORBIDDEN = {  # package -> what it must never import
    "settings": {"model", "storage", "workers", "flows", "supervisor", "ui", "cli"},
    "model": {"settings", "storage", "workers", "flows", "supervisor", "ui", "cli"},
    "storage": {"workers", "flows", "supervisor", "ui", "cli"},
    "workers": {"flows", "supervisor", "ui", "cli"},
    "flows": {"supervisor", "ui", "cli"},
    "supervisor": {"flows", "ui", "cli"},
    "ui": {"supervisor", "cli"},
    "cli": {"ui"},
}
KNOWN_EXCEPTIONS: set[tuple[str, str]] = (
    set()
)  # (importer, imported) edges allowed until their issue is fixed


def _files(package: str) -> list[Path]:
    single = REPO_ROOT / f"{package}.py"
    return [single] if single.exists() else sorted((REPO_ROOT / package).rglob("*.py"))


def _imported_packages(path: Path, package: str) -> set[str]:
    """The top-level packages `path` (a file of `package`) imports, other than its own."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return (found & set(PACKAGES)) - {package}  # a relative import (level > 0) stays inside its package


def import_graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> the files (relative to the repository) that import it."""
    graph: dict[str, dict[str, list[str]]] = {package: {} for package in PACKAGES}
    for package in PACKAGES:
        for path in _files(package):
            for imported in _imported_packages(path, package):
                graph[package].setdefault(imported, []).append(str(path.relative_to(REPO_ROOT)))
    return graph


def test_every_package_is_read() -> None:
    for package in PACKAGES:
        assert _files(package), f"{package} has no Python file: is PACKAGES out of date?"


def test_no_package_imports_one_above_it() -> None:
    graph = import_graph()
    upward = [
        f"{package} imports {imported} (in {', '.join(files)})"
        for package, edges in graph.items()
        for imported, files in sorted(edges.items())
        if imported in FORBIDDEN[package] and (package, imported) not in KNOWN_EXCEPTIONS
    ]
    assert upward == []


def test_the_known_exceptions_still_exist() -> None:
    graph = import_graph()
    assert [edge for edge in KNOWN_EXCEPTIONS if edge[1] not in graph[edge[0]]] == []  # fixed: drop it


def test_no_import_cycle_between_packages() -> None:
    graph = {package: set(edges) for package, edges in import_graph().items()}
    cycles = []
    for start in PACKAGES:  # a cycle through `start`: a path from one of its imports back to it
        stack: list[tuple[str, tuple[str, ...]]] = [(start, (start,))]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for imported in sorted(graph[node]):
                if imported == start:
                    cycles.append(" -> ".join((*path, start)))
                elif imported not in seen:
                    seen.add(imported)
                    stack.append((imported, (*path, imported)))
    assert cycles == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph() -> dict[str, set[str]]:
    """module -> the modules of PACKAGES it imports (`from a.b import c` counts a.b, and a.b.c when c is a
    module), at module level or inside a function; Alembic's migration scripts are left out."""
    modules = {
        _module_name(path): path
        for package in PACKAGES
        for path in _files(package)
        if "migrations" not in path.parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = (found & set(modules)) - {name}
    return graph


def test_no_import_cycle_between_modules() -> None:
    """A circle of modules (celery_app -> metrics -> client -> celery_app was one) works only while one of its
    imports stays lazy; none is left."""
    graph = module_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                cycles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checker_sees_function_level_and_from_imports(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "import os\nfrom storage.db import transaction\n\ndef f():\n    import ui.handlers\n"
        "    from . import sibling\n"
    )
    assert _imported_packages(source, "flows") == {"storage", "ui"}
