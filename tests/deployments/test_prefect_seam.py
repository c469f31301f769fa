"""No module outside deployments/prefect_compat touches a private Prefect name.

An AST walk over every Python module of the project (tests included, except the contract tests
whose job is to pin those names). A module touches a private Prefect name when it
- imports a module of Prefect whose dotted path has a part starting with `_`
  (`prefect._internal.observers`), or imports `_name` from a Prefect module;
- reads `._name` off something it imported from Prefect (`prefect.types._datetime`,
  `BaseWorker._submit_run`);
- assigns, deletes or `setattr`s an attribute of something it imported from Prefect (a replaced
  function or module attribute, whatever its name: the module's users see the change);
- in a class that derives from a Prefect class, defines, reads or writes a `_name` that a Prefect
  class of its bases defines or sets (an overridden private method, a private attribute of the
  base), or calls `super()._name`.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEAM = ROOT / "deployments" / "prefect_compat"
EXEMPT = {ROOT / "tests" / "deployments" / "test_prefect_contract.py"}  # it pins the private names
SKIPPED_DIRS = {".venv", ".git", "node_modules", "build", "dist", "__pycache__"}


def project_modules() -> list[Path]:
    modules = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = set(path.relative_to(ROOT).parts)
        if parts & SKIPPED_DIRS or any(p.endswith(".egg-info") for p in parts):
            continue
        if path.is_relative_to(SEAM) or path in EXEMPT:
            continue
        modules.append(path)
    return modules


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_prefect_module(dotted: str | None) -> bool:
    return dotted is not None and (dotted == "prefect" or dotted.startswith("prefect."))


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


@cache
def prefect_private_names(cls: type) -> frozenset[str]:
    """The `_names` that the Prefect classes among cls's bases define or set on `self`."""
    names: set[str] = set()
    for base in cls.__mro__:
        if not _is_prefect_module(getattr(base, "__module__", None)):
            continue
        names.update(n for n in vars(base) if _private(n))
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):
            continue
        names.update(m for m in re.findall(r"\bself\.(_\w+)", source) if _private(m))
    return frozenset(names)


@dataclass(frozen=True)
class Touch:
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.what}"


class PrivateTouches(ast.NodeVisitor):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.touches: list[Touch] = []
        self.prefect_names: set[str] = set()  # names this module bound to a Prefect module or object
        self._class_private: list[frozenset[str]] = []  # per enclosing class: Prefect's private names

    def touch(self, node: ast.AST, what: str) -> None:
        self.touches.append(Touch(self.path, getattr(node, "lineno", 0), what))

    # imports ---------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not _is_prefect_module(alias.name):
                continue
            if any(_private(part) for part in alias.name.split(".")):
                self.touch(node, f"imports {alias.name}")
            self.prefect_names.add(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not _is_prefect_module(node.module):
            return
        assert node.module is not None
        if any(_private(part) for part in node.module.split(".")):
            self.touch(node, f"imports from {node.module}")
        for alias in node.names:
            if _private(alias.name):
                self.touch(node, f"imports {alias.name} from {node.module}")
            self.prefect_names.add(alias.asname or alias.name)

    # reads and writes -------------------------------------------------------------------------

    def visit_Attribute(self, node: ast.Attribute) -> None:
        root = _root_name(node)
        if _private(node.attr):
            if root in self.prefect_names:
                self.touch(node, f"uses {ast.unparse(node)} (private to Prefect)")
            elif self._class_private and root in {"self", "cls"} and node.attr in self._class_private[-1]:
                self.touch(node, f"uses {ast.unparse(node)}, which a Prefect base class owns")
            elif isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "super" and self._class_private:
                self.touch(node, f"calls {ast.unparse(node)} of a Prefect base class")
        if isinstance(node.ctx, ast.Store | ast.Del) and root in self.prefect_names:
            self.touch(node, f"replaces {ast.unparse(node)} (monkeypatches Prefect)")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = ast.unparse(node.func)
        if func in {"setattr", "delattr"} and node.args and _root_name(node.args[0]) in self.prefect_names:
            self.touch(node, f"{func}() on {ast.unparse(node.args[0])} (monkeypatches Prefect)")
        self.generic_visit(node)

    # classes deriving from Prefect's ----------------------------------------------------------

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        private = self._prefect_private_names_of(node)
        if private:
            for statement in node.body:
                for name in _defined_names(statement):
                    if name in private:
                        self.touch(statement, f"class {node.name} overrides {name} of a Prefect base class")
        self._class_private.append(private)
        self.generic_visit(node)
        self._class_private.pop()

    def _prefect_private_names_of(self, node: ast.ClassDef) -> frozenset[str]:
        if not node.bases:
            return frozenset()
        module = importlib.import_module(_module_name(self.path))
        cls = getattr(module, node.name, None)  # classes at module level (nested ones: not found)
        return prefect_private_names(cls) if isinstance(cls, type) else frozenset()


def _defined_names(statement: ast.stmt) -> list[str]:
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
        return [statement.name]
    if isinstance(statement, ast.Assign):
        return [t.id for t in statement.targets if isinstance(t, ast.Name)]
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return [statement.target.id]
    return []


def private_touches(path: Path) -> list[Touch]:
    visitor = PrivateTouches(path)
    visitor.visit(ast.parse(path.read_text(), filename=str(path)))
    return visitor.touches


def test_no_module_outside_the_seam_touches_a_private_prefect_name() -> None:
    modules = project_modules()
    assert len(modules) > 100, "the walk sees the project"
    touches = [str(t) for path in modules for t in private_touches(path)]
    assert touches == [], "move these into deployments/prefect_compat:\n" + "\n".join(touches)


def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> Path:
    """A module of its own (a fresh name, so imports do not meet an earlier probe) under a root of its own."""
    package = tmp_path / f"seam_probe_{uuid.uuid4().hex}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "probe.py"
    # Each worker class a distinct type: Prefect registers worker classes by their type.
    module.write_text(source.replace("WORKER_TYPE", f"'{package.name}'"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    return module


WORKER = "from prefect.workers.base import BaseWorker\nclass W(BaseWorker):\n    type = WORKER_TYPE\n"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from prefect._internal.observers import X", "imports from prefect._internal.observers"),
        ("import prefect._flow_run_suspension as s", "imports prefect._flow_run_suspension"),
        ("from prefect.workers.base import _private_helper", "imports _private_helper from"),
        ("import prefect\nprefect.types._datetime.now('UTC')", "uses prefect.types._datetime"),
        ("from prefect.workers.base import BaseWorker\nBaseWorker._submit_run", "uses BaseWorker._submit_run"),
        ("import prefect.flow_engine as fe\nfe.run_flow = None", "replaces fe.run_flow"),
        ("import prefect.flow_engine as fe\nsetattr(fe, 'run_flow', None)", "setattr() on fe"),
        (WORKER + "    async def _submit_run(self, flow_run): ...\n", "overrides _submit_run"),
        (WORKER + "    def poll(self):\n        return self._limiter\n", "uses self._limiter, which a Prefect base"),
        (
            WORKER + "    async def poll(self):\n        return await super()._get_scheduled_flow_runs()\n",
            "calls super()._get_scheduled_flow_runs",
        ),
    ],
)
def test_the_walk_finds_each_kind_of_touch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    touches = [t.what for t in private_touches(probe(tmp_path, monkeypatch, source))]
    assert any(expected in t for t in touches), touches


def test_the_walk_leaves_public_use_and_own_private_names_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = WORKER + (
        "    def __init__(self, **kw):\n"
        "        super().__init__(**kw)\n"
        "        self._own_threads = 2\n"
        "    async def get_and_submit_flow_runs(self):\n"
        "        return [self.limiter, self._own_threads]\n"
        "    async def run(self, flow_run, configuration, task_status=None): ...\n"
    )
    assert private_touches(probe(tmp_path, monkeypatch, source)) == []
