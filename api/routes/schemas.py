"""The JSON Schema providers validate their specs against."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from checks.spec_schema import load_schema

router = APIRouter(prefix="/schemas", tags=["schemas"])


@router.get("/service-spec", summary="Service spec JSON Schema (Draft 2020-12)")
def service_spec_schema() -> dict[str, Any]:
    """The schema every POST /services body is validated against."""
    return load_schema()
