"""The layers' import rules, read from the source (every import statement, at any depth, in every module).

`checks/` is pure: no Prefect, and nothing above it (`tasks/`, `flows/`, `api/`). The API, the
gateway and storage never import `tasks/`: the API calls `checks/` directly. Storage imports
none of the others.
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
