"""Approval: open the request governance sees, and record the decision the flow was resumed with."""

from __future__ import annotations

from typing import Literal

from prefect import task
from prefect.input import RunInput
from pydantic import Field

from core.domain import Outcome, Phase, PhaseOutcome, ServiceStatus
from storage.database import session_scope
from storage.repositories import approvals, audit, outbox, versions
from storage.repositories.services import SYSTEM, event_data
from storage.repositories.services import get as get_service
from tasks._common import PhaseInput, backoff, jitter, run_phase
from tasks.publish_report import write_publish_report
from tasks.run_log import log_phases


class ApprovalDecision(RunInput):
    """What governance answers; the Prefect UI renders this as the run's Resume form."""

    decision: Literal["approve", "reject"] = Field(description="approve to publish, reject to fail it")
    reviewer: str = Field(min_length=1, max_length=128, description="Who decided")
    comment: str = Field(default="", max_length=4000, description="Why; shown to the provider on rejection")


class ApprovalRequest(PhaseInput):
    timeout_seconds: int


class DecisionInput(PhaseInput):
    decision: ApprovalDecision


@task(name="request-approval", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def request_approval(inp: ApprovalRequest) -> PhaseOutcome:
    """Open the approval and move the version to `pending_approval` (event `approval_requested`)."""

    def check() -> PhaseOutcome:
        with session_scope() as session:
            approval = approvals.request(
                session, inp.service_id, inp.version_id, inp.flow_run_id or "", inp.timeout_seconds
            )
            versions.transition(
                session,
                inp.version_id,
                ServiceStatus.PENDING_APPROVAL,
                actor=SYSTEM,
                reason="waiting for a governance decision",
                event_type="approval_requested",
                flow_run_id=inp.flow_run_id,
                details={"approvalId": approval.id},
            )
            evidence = {"approvalId": approval.id, "expiresAt": approval.expires_at.isoformat()}
        return PhaseOutcome(phase=Phase.APPROVAL, check="requested", outcome=Outcome.PASSED, evidence=evidence)

    outcome = run_phase(inp, check, Phase.APPROVAL)
    log_phases([outcome])
    # The run suspends next. Written here, not in the flow: a resumed run re-runs the flow from
    # the top, but gets this task's persisted result without running it, so the report is
    # written once per wait.
    write_publish_report(inp)
    return outcome


@task(name="record-decision", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def record_decision(inp: DecisionInput) -> PhaseOutcome:
    """Close the approval with the decision, audit it as the reviewer's, queue `approval_decided`."""
    decision = inp.decision
    approved = decision.decision == "approve"

    def check() -> PhaseOutcome:
        with session_scope() as session:
            approval = approvals.close(
                session, inp.version_id, "approved" if approved else "rejected", decision.reviewer, decision.comment
            )
            audit.append(
                session,
                service_id=inp.service_id,
                action="approval_decided",
                actor=decision.reviewer,
                actor_role="governance",
                reason=decision.comment or decision.decision,
                flow_run_id=inp.flow_run_id,
                details={"decision": decision.decision, "approvalId": approval.id},
            )
            service = get_service(session, inp.service_id)
            outbox.add(
                session,
                aggregate_id=inp.service_id,
                event_type="approval_decided",
                data=event_data(
                    service, decision.comment or None, decision=decision.decision, reviewer=decision.reviewer
                ),
            )
        return PhaseOutcome(
            phase=Phase.APPROVAL,
            check="decision",
            outcome=Outcome.PASSED if approved else Outcome.FAILED,
            evidence={"decision": decision.decision, "reviewer": decision.reviewer, "comment": decision.comment},
        )

    outcome = run_phase(inp, check, Phase.APPROVAL)
    log_phases([outcome])
    return outcome
