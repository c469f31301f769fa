"""The layers' import rules, read from the source (every import statement, at any depth, in every module).

`checks/` is pure: no Prefect, and nothing above it (`tasks/`, `flows/`, `api/`). The API, the
gateway and storage never import `tasks/`: the API calls `checks/` directly. Storage imports
none of the others, and its modules import each other one way only (no cycle, not even through
an import deferred into a function).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "checks": ("prefect", "tasks", "flows", "api", "gateway", "deployments", "notifications"),
    "api": ("tasks", "flows"),
    "gateway": ("tasks", "flows", "prefect"),
    "storage": ("api", "gateway", "checks", "flows", "tasks", "notifications", "deployments"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an `import` or `from ... import` in the file names, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(package: str, forbidden: tuple[str, ...], root: Path = PROJECT_ROOT) -> list[str]:
    """`file:line imports module` for each import of a forbidden top-level package."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        if "migrations" in path.parts and "versions" in path.parts:
            continue
        for line, module in imported_modules(path):
            if module.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(root)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_the_package_imports_only_what_its_layer_may(package):
    assert (PROJECT_ROOT / package / "__init__.py").exists()
    assert violations(package, FORBIDDEN[package]) == []


def test_the_checker_sees_imports_at_any_depth(tmp_path):
    package = tmp_path / "checks"
    package.mkdir()
    (package / "bad.py").write_text(
        "import json\n"
        "def f():\n"
        "    from prefect import task\n"
        "    import tasks.notify as n\n"
        "    return task, n\n"
        "from .sibling import x\n"  # relative imports stay inside the package
    )

    assert violations("checks", FORBIDDEN["checks"], root=tmp_path) == [
        "checks/bad.py:3 imports prefect",
        "checks/bad.py:4 imports tasks.notify",
    ]


def storage_import_graph(root: Path = PROJECT_ROOT) -> dict[str, set[str]]:
    """storage's modules and the storage modules each imports (a package's own submodules importing
    the package itself are left out: Python runs the package first anyway)."""
    modules = {}
    for path in (root / "storage").rglob("*.py"):
        if "migrations" in path.parts:
            continue
        name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        named = set()
        for _, module in imported_modules(path):
            named.add(module)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                named |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {m for m in named if m in modules and m != name and not name.startswith(m + ".")}
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one."""
    paths = [[start, nxt] for nxt in sorted(graph[start])]
    seen = set()
    while paths:
        path = paths.pop()
        if path[-1] == start:
            return path
        if path[-1] in seen:
            continue
        seen.add(path[-1])
        paths += [[*path, nxt] for nxt in sorted(graph[path[-1]])]
    return None


def test_storage_modules_import_each_other_one_way():
    graph = storage_import_graph()
    assert {"storage.database", "storage.cache", "storage.engine"} <= set(graph)
    assert {name: path for name in sorted(graph) if (path := cycle_through(graph, name))} == {}


def test_the_cycle_finder_finds_a_deferred_import_cycle():
    graph = {"storage.cache": {"storage.database"}, "storage.database": {"storage.cache"}, "storage.engine": set()}
    assert cycle_through(graph, "storage.cache") == ["storage.cache", "storage.database", "storage.cache"]
    assert cycle_through(graph, "storage.engine") is None
