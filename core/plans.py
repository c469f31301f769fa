"""Plans a consumer may subscribe under, read from a service's pricing, and when access needs approval.

A spec's `pricing.plans` lists them; a service that publishes none offers the default plan
from settings (`MARKETPLACE_CONSUMPTION__DEFAULT_PLAN__*`). `pricing.accessApproval: true`, or a
compliance level of `confidential`/`restricted`, means a subscription waits for the provider's or
governance's approval.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from core.settings import PlanSettings

APPROVAL_LEVELS = frozenset({"confidential", "restricted"})


class Plan(BaseModel):
    """One plan as the spec publishes it (camelCase in JSON)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    name: str
    description: str | None = None
    requests_per_minute: int = Field(ge=1)
    key_requests_per_minute: int | None = Field(default=None, ge=1)
    requests_per_month: int | None = Field(default=None, ge=1)
    tokens_per_month: int | None = Field(default=None, ge=1)
    max_tokens_per_request: int | None = Field(default=None, ge=1)
    price_per_month: Decimal = Field(default=Decimal(0), ge=0)
    default: bool = False


def plans_of(spec: dict[str, Any], fallback: PlanSettings) -> list[Plan]:
    """The service's plans; the configured default plan when its pricing lists none."""
    pricing = spec.get("pricing") if isinstance(spec.get("pricing"), dict) else {}
    published = (pricing or {}).get("plans") or []
    if not published:
        return [Plan(**fallback.model_dump(), default=True)]
    return [Plan.model_validate(plan) for plan in published]


def choose_plan(spec: dict[str, Any], name: str | None, fallback: PlanSettings) -> Plan | None:
    """The plan called `name`, or without a name the service's default (marked, else the first)."""
    plans = plans_of(spec, fallback)
    if name is None:
        return next((p for p in plans if p.default), plans[0])
    return next((p for p in plans if p.name == name), None)


def currency_of(spec: dict[str, Any]) -> str | None:
    pricing = spec.get("pricing")
    return pricing.get("currency") if isinstance(pricing, dict) else None


def approval_reason(spec: dict[str, Any]) -> str | None:
    """Why a subscription to this service needs approval, or None when it is granted at once."""
    compliance = spec.get("compliance") if isinstance(spec.get("compliance"), dict) else {}
    level = (compliance or {}).get("level")
    if level in APPROVAL_LEVELS:
        return f"the service's compliance level is {level}"
    pricing = spec.get("pricing") if isinstance(spec.get("pricing"), dict) else {}
    if (pricing or {}).get("accessApproval") is True:
        return "the provider approves each consumer's access"
    return None
