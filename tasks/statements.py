"""Monthly statements: which parties a month has, and issuing theirs (thin, retried, idempotent)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from prefect import task
from pydantic import BaseModel, Field

from storage.database import session_scope
from storage.repositories import statements
from tasks._common import backoff, jitter
from tasks.context import flow_context


class PeriodInput(BaseModel):
    period: str | None = Field(
        default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM; default: the month before now (UTC)."
    )
    now: datetime | None = Field(default=None, description="The moment 'the month before' is counted from.")

    def resolved(self) -> str:
        return self.period or statements.previous_period(self.now or datetime.now(UTC))


class PartyRef(BaseModel):
    party_type: str = Field(pattern="^(consumer|provider)$")
    party_id: str


class StatementPlan(BaseModel):
    period: str
    parties: list[PartyRef]


class BatchInput(BaseModel):
    period: str
    parties: list[PartyRef]
    fee_percent: Decimal = Field(description="The marketplace's cut of a provider's earnings, in percent.")
    flow_run_id: str | None = None


class IssuedStatement(BaseModel):
    statement_id: str
    party_type: str
    party_id: str
    currency: str
    total: Decimal


class BatchResult(BaseModel):
    issued: list[IssuedStatement] = Field(default_factory=list)
    already_issued: int = Field(default=0, description="Parties whose statements an earlier (or parallel) run issued.")


@task(name="plan-statements", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def plan_statements(inp: PeriodInput) -> StatementPlan:
    """The month to issue for and every consumer and provider with usage in it."""
    period = inp.resolved()
    with session_scope() as session:
        found = statements.parties(session, period)
    return StatementPlan(period=period, parties=[PartyRef(party_type=p.party_type, party_id=p.party_id) for p in found])


@task(name="issue-party-statements", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def issue_batch(inp: BatchInput) -> BatchResult:
    """Issue the statements of these parties not issued yet, each party in its own transaction."""
    result = BatchResult()
    for ref in inp.parties:
        party = statements.Party(ref.party_type, ref.party_id)
        with session_scope() as session:
            issued = statements.issue(session, party, inp.period, inp.fee_percent, inp.flow_run_id)
            result.issued += [
                IssuedStatement(
                    statement_id=s.id, party_type=s.party_type, party_id=s.party_id, currency=s.currency, total=s.total
                )
                for s in issued
            ]
        if not issued:
            result.already_issued += 1
    return result


def fee_percent() -> Decimal:
    return flow_context().settings.billing.marketplace_fee_percent
