"""Monthly statements: a consumer's and a provider's own, every one for admin, and admin corrections."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy.orm import Session

from api import access
from api.auth import Admin, AnyRole, Principal, Role, require_roles
from api.deps import DbSession, Limit, Offset
from api.errors import ErrorResponse
from api.statement_schemas import AdjustmentIn, AdjustmentOut, StatementLineOut, StatementOut, StatementPage
from core.errors import NotFoundError
from storage.models import Statement, StatementAdjustment
from storage.repositories import statements
from storage.repositories.statements import CENT, StatementFilter, amount_text

router = APIRouter(tags=["statements"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 404, 422)}
Consumer = Annotated[Principal, Depends(require_roles(Role.CONSUMER))]
Provider = Annotated[Principal, Depends(require_roles(Role.PROVIDER))]
Period = Annotated[str | None, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="Only this month (YYYY-MM).")]
StatementId = Annotated[str, Path(max_length=36)]


def _page(session: Session, filters: StatementFilter, offset: int, limit: int) -> StatementPage:
    rows, total = statements.list_statements(session, filters, offset, limit)
    return StatementPage(items=_out(session, rows), total=total, offset=offset, limit=limit)


def _out(session: Session, rows: Sequence[Statement]) -> list[StatementOut]:
    ids = [s.id for s in rows]
    lines, adjustments = statements.lines_for(session, ids), statements.adjustments_for(session, ids)
    return [_statement(s, lines[s.id], adjustments[s.id]) for s in rows]


def _statement(s: Statement, lines: Sequence[Any], adjustments: Sequence[StatementAdjustment]) -> StatementOut:
    # from the exact net, rounded once: rounding the rounded total again could move a cent
    adjusted = (s.net + sum((a.amount for a in adjustments), Decimal(0))).quantize(CENT, rounding=ROUND_HALF_UP)
    return StatementOut(
        id=s.id, party_type=s.party_type, party_id=s.party_id, period=s.period, currency=s.currency,
        period_start=s.period_start, period_end=s.period_end, requests=s.requests, input_tokens=s.input_tokens,
        output_tokens=s.output_tokens, gross=amount_text(s.gross), plan_fees=amount_text(s.plan_fees),
        fee_percent=amount_text(s.fee_percent),
        fee=amount_text(s.fee), net=amount_text(s.net), total=format(s.total, "f"),
        adjusted_total=format(adjusted, "f"), issued_at=s.issued_at, flow_run_id=s.flow_run_id,
        lines=[
            StatementLineOut(
                service_id=line.service_id, service_name=line.service_name, requests=line.requests,
                input_tokens=line.input_tokens, output_tokens=line.output_tokens, gross=amount_text(line.gross),
                plan_fees=amount_text(line.plan_fees), fee=amount_text(line.fee), net=amount_text(line.net),
            )
            for line in lines
        ],
        adjustments=[_adjustment(a) for a in adjustments],
    )  # fmt: skip


def _adjustment(a: StatementAdjustment) -> AdjustmentOut:
    return AdjustmentOut(
        id=a.id, statement_id=a.statement_id, amount=amount_text(a.amount), reason=a.reason,
        created_at=a.created_at, created_by=a.created_by,
    )  # fmt: skip


@router.get("/consumers/me/statements", response_model=StatementPage, responses=ERRORS, summary="My statements")
def my_statements(
    session: DbSession, principal: Consumer, period: Period = None, offset: Offset = 0, limit: Limit = 20
) -> StatementPage:
    """What the calling consumer owes, month by month (newest first), per service."""
    filters = StatementFilter(party_type=statements.CONSUMER, party_id=principal.subject, period=period)
    return _page(session, filters, offset, limit)


@router.get("/providers/me/statements", response_model=StatementPage, responses=ERRORS, summary="My earnings")
def my_earnings(
    session: DbSession, principal: Provider, period: Period = None, offset: Offset = 0, limit: Limit = 20
) -> StatementPage:
    """What the calling provider's services earned, month by month, less the marketplace's fee."""
    filters = StatementFilter(party_type=statements.PROVIDER, party_id=principal.subject, period=period)
    return _page(session, filters, offset, limit)


@router.get("/statements", response_model=StatementPage, responses=ERRORS, summary="All statements")
def all_statements(
    session: DbSession,
    _principal: Admin,
    party_type: Annotated[str | None, Query(alias="partyType", pattern="^(consumer|provider)$")] = None,
    party_id: Annotated[str | None, Query(alias="partyId", max_length=128)] = None,
    period: Period = None,
    offset: Offset = 0,
    limit: Limit = 20,
) -> StatementPage:
    """Every statement issued, filtered by party and month (admin)."""
    return _page(session, StatementFilter(party_type, party_id, period), offset, limit)


@router.get("/statements/{statement_id}", response_model=StatementOut, responses=ERRORS, summary="Read a statement")
def read_statement(statement_id: StatementId, session: DbSession, principal: AnyRole) -> StatementOut:
    """One statement with its lines and adjustments: for its party and admin (404 to anyone else)."""
    statement = statements.get(session, statement_id)
    mine = principal.subject == statement.party_id and principal.role.value == statement.party_type
    if not (mine or principal.role is Role.ADMIN):
        raise NotFoundError(f"statement {statement_id} not found")
    return _out(session, [statement])[0]


@router.post(
    "/statements/{statement_id}/adjustments",
    status_code=201,
    response_model=AdjustmentOut,
    responses=ERRORS,
    summary="Correct a statement",
)
def add_adjustment(
    statement_id: StatementId, body: AdjustmentIn, request: Request, session: DbSession, principal: Admin
) -> AdjustmentOut:
    """Add a correction as a separate entry (audited, evented); the issued statement never changes (admin)."""
    actor = access.actor_for(principal, request)
    adjustment = statements.adjust(session, statement_id, Decimal(body.amount), body.reason, actor)
    return _adjustment(adjustment)
