"""The README and docs/ name only files and tests that exist: a move or a rename that leaves a page
pointing at nothing fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT

PAGES = [
    PROJECT_ROOT / "README.md",
    PROJECT_ROOT / "deploy" / "README.md",
    *sorted((PROJECT_ROOT / "docs").glob("*.md")),
]
LAYERS = "api|checks|tasks|flows|storage|gateway|deployments|core|notifications|bench|tests"
SOURCE = re.compile(rf"`((?:{LAYERS})/[\w/.-]+\.py)`")
# `tests/x.py::test_a`, then `::test_b` on the same line meaning the same file
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::([\w]+)|`::([\w]+)")
LINK = re.compile(r"\]\(((?!https?:|#)[^)#]+)(?:#[^)]*)?\)")


def dangling(page: Path) -> list[str]:
    missing: list[str] = []
    for line in page.read_text().splitlines():
        missing += [path for path in SOURCE.findall(line) if not (PROJECT_ROOT / path).exists()]
        missing += [link for link in LINK.findall(line) if not (page.parent / link).exists()]
        current: Path | None = None
        for match in TEST_REF.finditer(line):
            if match.group(1):
                current = PROJECT_ROOT / match.group(1)
            name = match.group(2) or match.group(3)
            if current is not None and (not current.exists() or f"def {name}(" not in current.read_text()):
                missing.append(f"{current.relative_to(PROJECT_ROOT)}::{name}")
    return missing


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_file_link_and_test_named_exists(page: Path) -> None:
    assert dangling(page) == []


def test_the_check_notices_a_dangling_name(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("`api/no_such_module.py`, [gone](nowhere.md), `tests/core/test_docs_references.py::test_x`\n")
    assert dangling(page) == ["api/no_such_module.py", "nowhere.md", "tests/core/test_docs_references.py::test_x"]
