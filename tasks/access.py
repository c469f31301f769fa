"""Access approval: the wait an approve-access run opens, the decision it records, and expiry."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Literal

from prefect import task
from prefect.input import RunInput
from pydantic import BaseModel, Field

from storage.database import session_scope
from storage.repositories import access_requests, service_subscriptions
from storage.repositories.services import Actor
from tasks._common import backoff, jitter

EXPIRER = Actor("access-expiry", "system")
EXPIRY_GRACE_SECONDS = 1


class AccessDecision(RunInput):
    """What the reviewer answers; the Prefect UI renders this as the run's Resume form."""

    decision: Literal["approve", "reject"] = Field(description="approve to open access, reject to refuse it")
    reviewer: str = Field(min_length=1, max_length=128, description="Who decided")
    reviewer_role: Literal["governance", "provider", "admin"] = Field(
        default="governance", description="In which capacity (the API fills this in from the token)"
    )
    comment: str = Field(default="", max_length=4000, description="Why; shown to the consumer")


class AccessRef(BaseModel):
    access_request_id: str
    flow_run_id: str | None = None


class AccessWait(BaseModel):
    """Whether the request still waits, and for how long at most."""

    status: str
    timeout_seconds: int


class DecisionInput(AccessRef):
    decision: AccessDecision


class ExpiryInput(BaseModel):
    now: datetime | None = Field(default=None, description="The moment to expire against (default: now)")


@task(name="open-access-wait", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def open_access_wait(ref: AccessRef) -> AccessWait:
    """Find the request (the API stores it right after starting this run) and how long it may wait."""
    with session_scope() as session:
        request = access_requests.get_request(session, ref.access_request_id)  # NotFoundError: retried until stored
        if ref.flow_run_id and request.flow_run_id is None:
            access_requests.set_flow_run(session, request.id, ref.flow_run_id)
        remaining = (request.expires_at - datetime.now(UTC)).total_seconds()
        # Rounded up, plus a second: Prefect must fail the run only once the deadline has passed,
        # or the expiry its failure triggers finds the request not yet overdue and nothing else
        # expires it before the schedule's next turn (int() here once fired ~1 s early).
        return AccessWait(status=request.status, timeout_seconds=max(1, math.ceil(remaining) + EXPIRY_GRACE_SECONDS))


@task(name="record-access-decision", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def record_access_decision(inp: DecisionInput) -> str:
    """Close the request with the decision (audited as the reviewer's) and open or refuse the subscription."""
    decision = inp.decision
    reviewer = Actor(decision.reviewer, decision.reviewer_role)
    with session_scope() as session:
        request = access_requests.decide(
            session, inp.access_request_id, decision.decision == "approve", reviewer, decision.comment or None
        )
        return request.status


@task(name="expire-access-requests", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def expire_overdue(inp: ExpiryInput) -> list[str]:
    """Close every pending request past its deadline as `expired` (its subscription too); returns their ids."""
    now = inp.now or datetime.now(UTC)
    with session_scope() as session:
        overdue = access_requests.overdue(session, now)
        for request in overdue:
            access_requests.withdraw(
                session, request, service_subscriptions.EXPIRED, "no decision before the deadline", EXPIRER
            )
        return [r.id for r in overdue]
