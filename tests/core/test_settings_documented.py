"""docs/configuration.md lists every MARKETPLACE_* setting: a new setting without a row fails here."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from core.settings import PROJECT_ROOT, Settings
from deployments.stack_settings import StackSettings

PAGE = PROJECT_ROOT / "docs" / "configuration.md"


def variables(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str]]:
    """(environment variable, its group's prefix) for every leaf setting of a settings tree."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from variables(annotation, f"{prefix}{name.upper()}__")
        else:
            yield f"{prefix}{name.upper()}", prefix


def documented(variable: str, group: str, page: str) -> bool:
    """Named in full, or in a table row of its group as `__LEAF` (rows list related settings together),
    or covered by a `GROUP__*` row."""
    if f"`{variable}`" in page or f"`{group}*`" in page:
        return True
    leaf = variable.removeprefix(group)
    return any(f"`__{leaf}`" in row and f"`{group}" in row for row in page.splitlines())


def test_every_setting_has_a_row() -> None:
    page = PAGE.read_text()
    tree = [*variables(Settings, "MARKETPLACE_"), *variables(StackSettings, "MARKETPLACE_STACK__")]
    missing = [variable for variable, group in tree if not documented(variable, group, page)]
    assert not missing, f"settings missing from {PAGE.name}: {missing}"


def test_the_check_notices_a_missing_row() -> None:
    assert not documented("MARKETPLACE_GATEWAY__NO_SUCH_SETTING", "MARKETPLACE_GATEWAY__", PAGE.read_text())
