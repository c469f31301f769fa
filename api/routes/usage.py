"""Usage of the gateway: a consumer's own calls, and the calls to a service for its provider and staff."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query

from api import access
from api.auth import AnyRole, Role
from api.deps import DbSession, Offset
from api.routes.approvals import AUTH_ERRORS
from api.schemas import UsageOut, UsagePage, UsageTotals
from core.errors import ForbiddenError, SpecValidationError
from storage.models import UsageRecord
from storage.repositories import services, usage_rollups
from storage.repositories import usage as usage_repo
from storage.repositories.usage import UsageQuery

router = APIRouter(tags=["usage"])
Since = Annotated[datetime | None, Query(alias="from", description="ISO 8601, inclusive")]
Until = Annotated[datetime | None, Query(alias="to", description="ISO 8601, exclusive")]
Limit = Annotated[int, Query(ge=1, le=500)]


def amount(value: Decimal) -> str:
    """A decimal amount as plain text without trailing zeros ("0.000123", "12")."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _utc(moment: datetime | None) -> datetime | None:
    """A time given without an offset is UTC (as every usage time is)."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _page(session: DbSession, query: UsageQuery, offset: int, limit: int) -> UsagePage:
    query = replace(query, start=_utc(query.start), end=_utc(query.end))
    if query.start is not None and query.end is not None and query.end <= query.start:
        raise SpecValidationError("'to' must be after 'from'", [{"pointer": "/query/to", "message": "not after from"}])
    # whole days from the daily rollups, the partial days at the edges from the raw rows: a year is
    # a few hundred rollup rows, not every call; the count of matching rows is the requests total
    totals = usage_rollups.totals(session, query)
    rows = usage_repo.page_records(session, query, offset, limit)
    return UsagePage(
        items=[_out(r) for r in rows],
        total=totals.requests,
        offset=offset,
        limit=limit,
        totals=UsageTotals(
            requests=totals.requests,
            input_tokens=totals.input_tokens,
            output_tokens=totals.output_tokens,
            cost={currency: amount(total) for currency, total in totals.cost.items()},
        ),
    )


def _out(row: UsageRecord) -> UsageOut:
    return UsageOut(
        request_id=row.request_id,
        occurred_at=row.occurred_at,
        consumer_id=row.consumer_id,
        key_id=row.key_id,
        service_id=row.service_id,
        service_version=row.service_version,
        subscription_id=row.subscription_id,
        route=row.route,
        status=row.status,
        latency_ms=row.latency_ms,
        ttfb_ms=row.ttfb_ms,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cost=amount(row.cost),
        currency=row.currency,
        stream=row.stream,
        error=row.error,
    )


@router.get("/consumers/me/usage", response_model=UsagePage, responses=AUTH_ERRORS, summary="My usage")
def my_usage(
    session: DbSession,
    principal: AnyRole,
    since: Since = None,
    until: Until = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> UsagePage:
    """The caller's own gateway calls (consumer role), newest first, with totals over the range."""
    if principal.role is not Role.CONSUMER:
        raise ForbiddenError("only a consumer has usage of its own; staff read a service's usage")
    return _page(session, UsageQuery(consumer_id=principal.subject, start=since, end=until), offset, limit)


@router.get("/services/{service_id}/usage", response_model=UsagePage, responses=AUTH_ERRORS, summary="Service usage")
def service_usage(
    service_id: str,
    session: DbSession,
    principal: AnyRole,
    since: Since = None,
    until: Until = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> UsagePage:
    """Calls to the service through the gateway: for its provider, governance and admin."""
    service = services.get(session, service_id)
    access.require_internals(principal, service_id, service.provider_id, service.status)
    return _page(session, UsageQuery(service_id=service_id, start=since, end=until), offset, limit)
