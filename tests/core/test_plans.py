"""Plans from a spec's pricing and when access needs approval (core/plans.py)."""

from __future__ import annotations

from decimal import Decimal

from core.plans import approval_reason, choose_plan, plans_of
from core.settings import PlanSettings
from tests.support.specs import make_spec

FALLBACK = PlanSettings(name="basic", requests_per_minute=30, tokens_per_month=1000)


def test_published_plans_and_the_default() -> None:
    spec = make_spec()
    assert [p.name for p in plans_of(spec, FALLBACK)] == ["starter", "pro"]
    assert choose_plan(spec, None, FALLBACK).name == "starter"  # type: ignore[union-attr]
    pro = choose_plan(spec, "pro", FALLBACK)
    assert pro is not None and (pro.requests_per_minute, pro.key_requests_per_minute) == (600, 300)
    assert pro.price_per_month == Decimal(49) and pro.max_tokens_per_request == 4096
    assert choose_plan(spec, "enterprise", FALLBACK) is None


def test_without_plans_the_configured_default_is_offered() -> None:
    spec = make_spec()
    del spec["pricing"]["plans"]
    (only,) = plans_of(spec, FALLBACK)
    assert (only.name, only.requests_per_minute, only.tokens_per_month, only.default) == ("basic", 30, 1000, True)
    assert choose_plan(spec, None, FALLBACK) == only


def test_the_first_plan_is_the_default_when_none_is_marked() -> None:
    spec = make_spec()
    spec["pricing"]["plans"][0]["default"] = False
    assert choose_plan(spec, None, FALLBACK).name == "starter"  # type: ignore[union-attr]


def test_approval_by_compliance_level_or_provider_choice() -> None:
    assert approval_reason(make_spec()) is None
    for level in ("confidential", "restricted"):
        assert level in (approval_reason(make_spec(compliance={"level": level})) or "")
    assert approval_reason(make_spec(compliance={"level": "internal"})) is None
    spec = make_spec()
    spec["pricing"]["accessApproval"] = True
    assert approval_reason(spec) == "the provider approves each consumer's access"
