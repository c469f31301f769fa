"""Access approval: a consumer's subscription to a service that needs the provider's or governance's consent.

The run suspends (no process waits while the reviewer decides) and is resumed with an
`AccessDecision` from our API (`POST /api/v1/access-requests/{id}/decision`) or from the Prefect
UI's Resume form, exactly like publication approval. Resumed, it re-runs from the top: the task
before the wait returns its persisted result instead of running again. Without a decision the
run's timeout passes, Prefect fails it, and `expire-access-requests` closes the request `expired`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.client.schemas.objects import State
from prefect.flow_runs import suspend_flow_run
from prefect.runtime import flow_run
from prefect.states import Completed

from tasks.access import (
    AccessDecision,
    AccessRef,
    DecisionInput,
    ExpiryInput,
    expire_overdue,
    open_access_wait,
    record_access_decision,
)
from tasks.run_log import log_origin


@flow(name="approve-access", retries=0, persist_result=True, log_prints=False)
def approve_access(access_request_id: str) -> State[Any]:
    """Wait for the decision on a consumer's access, then open the subscription or refuse it."""
    log_origin("access approval started")
    ref = AccessRef(access_request_id=access_request_id, flow_run_id=flow_run.get_id())
    wait = open_access_wait(ref)
    if wait.status != "pending":  # cancelled or expired before the run got here
        return Completed(message=f"access request is {wait.status}; nothing to wait for")
    decision = suspend_flow_run(
        wait_for_input=AccessDecision, timeout=wait.timeout_seconds, key=f"access-{access_request_id}"
    )
    outcome = record_access_decision(DecisionInput(**ref.model_dump(), decision=decision))
    return Completed(message=f"access request {outcome} by {decision.reviewer}")


@flow(name="expire-access-requests", retries=0, log_prints=False)
def expire_access_requests(now: datetime | None = None) -> int:
    """Close access requests whose deadline passed without a decision; returns how many."""
    return len(expire_overdue(ExpiryInput(now=now)))
