"""Versions, deprecation, approvals and archives on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from core.domain import ServiceStatus
from core.errors import ConflictError, DuplicateServiceError, InvalidTransitionError
from storage.database import session_scope
from storage.repositories import approvals, audit, services, versions
from storage.repositories.services import SYSTEM, Actor
from tests.support.specs import make_spec

PROVIDER = Actor("acme", "provider")
PIPELINE = (ServiceStatus.VALIDATING, ServiceStatus.TESTING, ServiceStatus.ACTIVE)


def publish_first(**overrides: object) -> tuple[str, str]:
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(**overrides), PROVIDER)
        version_id = versions.latest(session, service.id).id
        for target in PIPELINE:
            versions.transition(session, version_id, target, actor=SYSTEM, reason=str(target))
        return service.id, version_id


def test_a_new_version_replaces_the_live_one_only_when_active(database_url: str) -> None:
    service_id, first = publish_first()
    with session_scope() as session:
        service = services.get(session, service_id)
        second = versions.create_next(session, service, make_spec(version="1.1.0", description="better"), PROVIDER)
        versions.transition(session, second.id, ServiceStatus.VALIDATING, actor=SYSTEM, reason="start")
        versions.transition(session, second.id, ServiceStatus.TESTING, actor=SYSTEM, reason="tests")
        second_id = second.id
    with session_scope() as session:
        service = services.get(session, service_id)
        assert (service.status, service.version) == ("active", "1.0.0"), "the old version keeps serving"
        assert versions.in_flight(session, service_id).id == second_id
        versions.transition(session, second_id, ServiceStatus.ACTIVE, actor=SYSTEM, reason="live")
    with session_scope() as session:
        service = services.get(session, service_id)
        assert (service.status, service.version, service.description) == ("active", "1.1.0", "better")
        statuses = {v.version: v.status for v in versions.for_service(session, service_id)}
        assert statuses == {"1.0.0": "superseded", "1.1.0": "active"}
        assert versions.get(session, first).status == "superseded"


def test_a_failed_new_version_leaves_the_service_alone(database_url: str) -> None:
    service_id, _ = publish_first()
    with session_scope() as session:
        second = versions.create_next(session, services.get(session, service_id), make_spec(version="2.0.0"), PROVIDER)
        versions.transition(session, second.id, ServiceStatus.FAILED, actor=SYSTEM, reason="endpoint down")
    with session_scope() as session:
        service = services.get(session, service_id)
        assert (service.status, service.version, service.failure_reason) == ("active", "1.0.0", None)
        actions = [a.action for a in audit.for_service(session, service_id)]
        assert "version_status_changed" in actions


def test_a_new_version_cannot_reuse_a_taken_number(database_url: str) -> None:
    service_id, _ = publish_first()
    with session_scope() as session, pytest.raises(DuplicateServiceError):
        versions.create_next(session, services.get(session, service_id), make_spec(), PROVIDER)


def test_deprecation_sets_and_clears_its_timestamps(database_url: str) -> None:
    service_id, _ = publish_first()
    with session_scope() as session:
        services.transition(session, service_id, ServiceStatus.DEPRECATED, actor=PROVIDER, reason="old")
        assert services.get(session, service_id).deprecated_at is not None
        services.transition(session, service_id, ServiceStatus.ACTIVE, actor=PROVIDER, reason="withdrawn")
        assert services.get(session, service_id).deprecated_at is None
        with pytest.raises(InvalidTransitionError):
            services.transition(session, service_id, ServiceStatus.RETIRED, actor=PROVIDER, reason="skip")


def test_retired_services_are_archived_with_every_version(database_url: str) -> None:
    service_id, _ = publish_first()
    with session_scope() as session:
        services.transition(session, service_id, ServiceStatus.DEPRECATED, actor=PROVIDER, reason="old")
        services.transition(session, service_id, ServiceStatus.RETIRED, actor=SYSTEM, reason="sunset")
        service = services.get(session, service_id)
        services.archive(session, service, {"spec": service.spec})
    with session_scope() as session:
        service = services.get(session, service_id)
        assert service.status == "retired"
        assert service.archived_at is not None
        assert [v.status for v in versions.for_service(session, service_id)] == ["retired"]


def test_approval_is_opened_once_and_decided_once(database_url: str) -> None:
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(), PROVIDER)
        version_id = versions.latest(session, service.id).id
        first = approvals.request(session, service.id, version_id, "run-1", 60)
        again = approvals.request(session, service.id, version_id, "run-1", 60)
        assert first.id == again.id
        assert approvals.pending_for_service(session, service.id).id == first.id
        approvals.close(session, version_id, "approved", "gov", "fine")
        approvals.close(session, version_id, "rejected", "other", "too late")
    with session_scope() as session:
        closed = approvals.by_status(session, "approved", 0, 10)
        assert [(a.reviewer, a.comment) for a in closed] == [("gov", "fine")]
        with pytest.raises(ConflictError, match="already decided"):
            approvals.pending_for_service(session, service.id)


def test_no_approval_is_a_conflict(database_url: str) -> None:
    service_id, _ = publish_first()
    with session_scope() as session, pytest.raises(ConflictError, match="not waiting"):
        approvals.pending_for_service(session, service_id)
