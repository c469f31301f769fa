"""The publish flow: from a submitted version to an active service, or to `failed` with reasons.

Four tasks on the way to `active`, one per stretch of work that can fail and be retried on its
own: the submission's checks (metadata, OpenAPI, policies), the registry, the endpoint tests
(with persistence first), the activation (with indexing). Each phase is still recorded for the
status report; what a task would not have bought (a separate retry of a deterministic check, a
task run per parallel check) is not paid for in orchestration.

A run that needs approval suspends (no process is held while governance decides) and is
re-run from the top when resumed: every task before the wait returns its persisted result
for this flow run instead of running again.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.flow_runs import suspend_flow_run
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from prefect.transactions import Transaction

from checks.phase_lines import phase_label
from checks.report_markdown import steps_text
from core.domain import Audience, Phase, PhaseOutcome, ServiceStatus, requires_approval
from flows.compensation import Compensation
from tasks._common import PhaseInput, SpecInput
from tasks.activation import activate_service
from tasks.approval import ApprovalDecision, ApprovalRequest, DecisionInput, record_decision, request_approval
from tasks.context import flow_context
from tasks.endpoint_tests import run_endpoint_tests
from tasks.indexing import ServiceRef, sync_search_entry
from tasks.lifecycle import RollbackInput, TransitionInput, record_rollback, transition_status
from tasks.notify import NotificationInput, notify
from tasks.publish_report import write_publish_report
from tasks.registry import RegistryEntryInput, registry_sync, remove_registry_entry
from tasks.run_log import log_origin
from tasks.submission import VersionNotStored, check_submission


class PublicationRejected(Exception):
    """A phase (or a reviewer) found the version unfit for the marketplace."""

    def __init__(self, phase: Phase, reason: str) -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason


@flow(name="publish-service", retries=0, persist_result=True, log_prints=False)
def publish_service(service_id: str, version_id: str) -> State[Any]:
    """Take a submitted version through validation, policy, registry, tests, approval and activation."""
    log_origin("publish started")
    base = PhaseInput(service_id=service_id, version_id=version_id, flow_run_id=flow_run.get_id())
    compensation = Compensation(get_run_logger())
    try:
        checks = check_submission(base)  # a failure here has written nothing outward
        if checks.failure is not None:
            _require(checks.failure)
        _publish_outward(base, checks.spec, compensation)
    except VersionNotStored as missing:  # refused or lost after its run was created: nothing to fail or undo
        get_run_logger().error("publish failed: %s", missing)
        write_publish_report(base, missing=str(missing))
        return Failed(message=str(missing))
    except PublicationRejected as rejected:
        return _fail(base, compensation, rejected.phase, rejected.reason)
    except Exception as exc:  # a task that exhausted its retries: still end in `failed`, never stuck
        get_run_logger().exception("publish pipeline error")
        return _fail(base, compensation, None, f"pipeline error: {type(exc).__name__}: {exc}")
    compensation.commit()
    _tell_governance(base, "service_published")
    write_publish_report(base)
    return Completed(message="service active")


def _publish_outward(base: PhaseInput, spec: dict[str, Any], compensation: Compensation) -> None:
    """Steps that write outside the flow, each registering how to undo itself."""
    inp = SpecInput(**base.model_dump(), spec=spec)
    registry = registry_sync(inp)
    compensation.register(_undo_registry, base=base, registry_id=registry.evidence["registryId"])
    for outcome in run_endpoint_tests(inp).failures:
        _require(outcome)
    if requires_approval(spec):
        _await_approval(base)
    compensation.register(_undo_search, base=base)  # before indexing: undoing an entry never made is a no-op
    activate_service(base)


def _await_approval(base: PhaseInput) -> None:
    """Suspend until governance decides (the Pause signal ends this process; a resume re-runs the flow)."""
    timeout = flow_context().settings.lifecycle.approval_timeout_seconds
    request_approval(ApprovalRequest(**base.model_dump(), timeout_seconds=timeout))
    _tell_governance(base, "approval_requested")
    decision = suspend_flow_run(wait_for_input=ApprovalDecision, timeout=timeout, key=f"approval-{base.version_id}")
    record_decision(DecisionInput(**base.model_dump(), decision=decision))
    if decision.decision != "approve":
        comment = f": {decision.comment}" if decision.comment else ""
        raise PublicationRejected(Phase.APPROVAL, f"rejected by {decision.reviewer}{comment}")


def _tell_governance(base: PhaseInput, event_type: str) -> None:
    """Signed webhooks to governance; never decides the publication's fate (failures are recorded).
    With no governance webhook configured there is nothing to send, and no task run is made."""
    if not flow_context().settings.webhooks.governance_urls:
        return
    try:
        notify(
            NotificationInput(
                service_id=base.service_id,
                event_type=event_type,
                audience=Audience.GOVERNANCE,
                data={"versionId": base.version_id},
                flow_run_id=base.flow_run_id,
            )
        )
    except Exception:
        get_run_logger().exception("governance notification %s failed; recorded with its attempts", event_type)


def _undo_search(txn: Transaction) -> None:
    base: PhaseInput = txn.get("base")
    sync_search_entry(ServiceRef(service_id=base.service_id, flow_run_id=base.flow_run_id))


def _undo_registry(txn: Transaction) -> None:
    base: PhaseInput = txn.get("base")
    remove_registry_entry(RegistryEntryInput(**base.model_dump(), registry_id=txn.get("registry_id")))


def _require(outcome: PhaseOutcome) -> None:
    if not outcome.passed:
        raise PublicationRejected(outcome.phase, _summarize(outcome))


def _summarize(outcome: PhaseOutcome) -> str:
    name = f"{outcome.phase.value}.{outcome.check}" if outcome.check else outcome.phase.value
    messages = "; ".join(f"{e.pointer or '/'}: {e.message} [{e.code}]" for e in outcome.errors[:5])
    more = f" (+{len(outcome.errors) - 5} more)" if len(outcome.errors) > 5 else ""
    return f"{name} failed: {messages}{more}"


def _move(base: PhaseInput, target: ServiceStatus, reason: str, **extra: Any) -> None:
    transition_status(TransitionInput(**base.model_dump(), target=target, reason=reason, **extra))


def _fail(base: PhaseInput, compensation: Compensation, phase: Phase | None, reason: str) -> State[Any]:
    """Undo outward writes, then end in `failed` with a `validation_failed` event (the provider's notice).

    Without a phase (an error) the failure is charged to the phase that was running.
    """
    get_run_logger().error("publish failed%s: %s", f" in {phase_label(phase)}" if phase else "", reason)
    problems = _compensate(base, compensation)
    failure_phase = phase.value if phase else None
    _move(base, ServiceStatus.FAILED, reason, event_type="validation_failed", failure_phase=failure_phase)
    write_publish_report(base, compensation=compensation.steps, problems=problems)
    # Its own name: the reconcile trigger listens for `prefect.flow-run.Failed` (runs that died or
    # expired), and a publication that failed cleanly has nothing left to reconcile.
    return Failed(name="PublicationFailed", message=reason)


def _compensate(base: PhaseInput, compensation: Compensation) -> list[str]:
    """Run the undo steps (if any were registered) and record the rollback; returns the steps that failed."""
    if not compensation.steps:
        return []
    problems = compensation.rollback()
    record_rollback(RollbackInput(**base.model_dump(), steps=compensation.steps, problems=problems))
    done = steps_text(compensation.steps)
    if problems:
        get_run_logger().error("compensation: %s incomplete: %s", done, "; ".join(problems))
    else:
        get_run_logger().info("compensation: %s done", done)
    return problems
