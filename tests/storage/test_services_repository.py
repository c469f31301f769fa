"""Services repository on SQLite and PostgreSQL: lifecycle, audit, outbox, uniqueness."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from core.domain import Outcome, Phase, PhaseOutcome, ServiceStatus
from core.errors import DuplicateServiceError, InvalidTransitionError, NotFoundError
from storage.database import get_engine, session_scope
from storage.repositories import audit, outbox, phases, services, versions
from storage.repositories.services import SYSTEM, Actor, ServiceFilter
from tests.support.specs import make_spec

PROVIDER = Actor("acme", "provider")


def test_submission_writes_service_version_audit_and_event_together(database_url: str) -> None:
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(), PROVIDER)
        service_id = service.id
    with session_scope() as session:
        stored = services.get(session, service_id)
        assert stored.status == "submitted"
        assert stored.spec["endpoint"]["url"] == "https://api.acme.example/v1"
        trail = audit.for_service(session, service_id)
        assert [(a.action, a.actor, a.to_status) for a in trail] == [("submitted", "acme", "submitted")]
        events = outbox.for_aggregate(session, service_id)
        assert [e.event_type for e in events] == ["service_submitted"]
        assert events[0].payload["specversion"] == "1.0"
        assert events[0].payload["id"] == events[0].event_id
        assert events[0].payload["data"]["serviceId"] == service_id


def test_duplicate_name_and_version_is_refused_and_loses_nothing(database_url: str) -> None:
    with session_scope() as session:
        first = services.create_submitted(session, make_spec(), PROVIDER).id
    with session_scope() as session:
        with pytest.raises(DuplicateServiceError) as raised:
            services.create_submitted(session, make_spec(description="other"), PROVIDER)
        assert raised.value.status_code == 409
        # the savepoint kept the session usable
        other = services.create_submitted(session, make_spec(version="1.0.1"), PROVIDER)
        assert other.id != first
    with session_scope() as session:
        assert services.get(session, first).description == "Acme's general purpose chat model"
        _, total = services.list_services(session, ServiceFilter(), 0, 10)
        assert total == 2


def first_version(service_id: str) -> str:
    with session_scope() as session:
        return versions.latest(session, service_id).id


def test_transition_follows_lifecycle_and_audits(database_url: str) -> None:
    with session_scope() as session:
        service_id = services.create_submitted(session, make_spec(), PROVIDER).id
    version_id = first_version(service_id)
    with session_scope() as session:
        for target in (ServiceStatus.VALIDATING, ServiceStatus.TESTING, ServiceStatus.ACTIVE):
            versions.transition(session, version_id, target, actor=SYSTEM, reason=f"to {target}", event_type="x")
    with session_scope() as session:
        stored = services.get(session, service_id)
        assert stored.status == "active"
        assert stored.published_at is not None
        moves = [(a.from_status, a.to_status) for a in audit.for_service(session, service_id)][1:]
        assert moves == [("submitted", "validating"), ("validating", "testing"), ("testing", "active")]
        with pytest.raises(InvalidTransitionError):
            versions.transition(session, version_id, ServiceStatus.FAILED, actor=SYSTEM, reason="too late")


def test_failure_keeps_phase_and_reason(database_url: str) -> None:
    with session_scope() as session:
        service_id = services.create_submitted(session, make_spec(), PROVIDER).id
        version_id = versions.latest(session, service_id).id
        versions.set_phase(session, version_id, Phase.METADATA_VALIDATION.value)
        versions.transition(session, version_id, ServiceStatus.FAILED, actor=SYSTEM, reason="bad semver")
    with session_scope() as session:
        stored = services.get(session, service_id)
        assert (stored.status, stored.failure_phase, stored.failure_reason) == (
            "failed",
            "metadata_validation",
            "bad semver",
        )


def test_repeated_transition_is_idempotent(database_url: str) -> None:
    with session_scope() as session:
        service_id = services.create_submitted(session, make_spec(), PROVIDER).id
        version_id = versions.latest(session, service_id).id
        versions.transition(session, version_id, ServiceStatus.VALIDATING, actor=SYSTEM, reason="start")
        versions.transition(session, version_id, ServiceStatus.VALIDATING, actor=SYSTEM, reason="retried")
        assert len(audit.for_service(session, service_id)) == 2


def test_audit_log_refuses_update_and_delete(database_url: str) -> None:
    with session_scope() as session:
        service_id = services.create_submitted(session, make_spec(), PROVIDER).id
    for statement in ("UPDATE audit_log SET reason = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), get_engine().begin() as conn:
            conn.execute(text(statement))
    with session_scope() as session:
        assert audit.for_service(session, service_id)[0].reason == "submitted for publication"


def test_list_filters_and_paginates(database_url: str) -> None:
    with session_scope() as session:
        for i in range(5):
            spec = make_spec(name=f"svc-{i}", category="chat" if i % 2 else "embeddings")
            spec["provider"] = {"id": "p1" if i < 3 else "p2", "name": "P"}
            services.create_submitted(session, spec, PROVIDER)
    with session_scope() as session:
        page, total = services.list_services(session, ServiceFilter(category="chat"), 0, 10)
        assert total == 2 and {s.name for s in page} == {"svc-1", "svc-3"}
        page, total = services.list_services(session, ServiceFilter(provider_id="p1"), 1, 1)
        assert total == 3 and len(page) == 1
        _, total = services.list_services(session, ServiceFilter(status="active"), 0, 10)
        assert total == 0


def test_phase_results_are_kept_per_run(database_url: str) -> None:
    from datetime import UTC, datetime

    with session_scope() as session:
        service_id = services.create_submitted(session, make_spec(), PROVIDER).id
        outcome = PhaseOutcome(phase=Phase.OPENAPI_VALIDATION, outcome=Outcome.SKIPPED, duration_ms=1.5)
        phases.record(session, service_id, "run-1", outcome, datetime.now(UTC))
        phases.record(session, service_id, "run-2", outcome, datetime.now(UTC))
    with session_scope() as session:
        assert len(phases.for_service(session, service_id, "run-1")) == 1
        assert len(phases.for_service(session, service_id)) == 2


def test_unknown_service_is_not_found(database_url: str) -> None:
    with session_scope() as session, pytest.raises(NotFoundError):
        services.get(session, "00000000-0000-0000-0000-000000000000")
