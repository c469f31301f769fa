"""Consumption tables on SQLite and PostgreSQL: the gateway's reads, announcements, uniqueness."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from core import keys
from core.domain import ServiceStatus
from core.errors import ConflictError
from core.plans import Plan
from core.settings import ConsumptionSettings
from storage.consumption_feed import read_stamps
from storage.database import get_engine, session_scope
from storage.encryption import box_for
from storage.repositories import access, api_keys, consumers, credentials, service_subscriptions, services, versions
from storage.repositories.api_keys import KeySpec
from storage.repositories.services import SYSTEM, Actor
from tests.support.specs import make_spec

ADMIN = Actor("root", "admin")
ALICE = Actor("alice", "consumer")
PROVIDER = Actor("acme", "provider")
PEPPER = "p" * 40
BOX = box_for(ConsumptionSettings())
PLAN = Plan(name="pro", requests_per_minute=600, key_requests_per_minute=100, tokens_per_month=5000)


def live_service(**overrides: object) -> str:
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(**overrides), PROVIDER)
        version_id = versions.latest(session, service.id).id
        for status in (ServiceStatus.VALIDATING, ServiceStatus.TESTING, ServiceStatus.ACTIVE):
            versions.transition(session, version_id, status, actor=SYSTEM, reason="pipeline")
        return service.id


def consumption_stamp() -> int:
    with get_engine().connect() as connection:
        return read_stamps(connection)[0]


def test_a_key_loads_with_its_consumer_in_one_read_and_stops_when_revoked(database_url: str) -> None:
    with session_scope() as session:
        consumers.ensure(session, "alice", ALICE)
        key, issued = api_keys.create(session, "alice", KeySpec("ci", service_ids=["s2", "s1"]), PEPPER, ALICE)
    key_id, secret = keys.parse_key(issued.token) or ("", "")
    assert key_id == key.id
    with session_scope() as session:
        record = api_keys.load_key(session, key_id)
        stored = session.execute(text("SELECT secret_hash FROM api_keys WHERE id = :id"), {"id": key_id}).scalar()
    assert record is not None and record.matches(PEPPER, secret) and not record.matches(PEPPER, secret[:-1] + "x")
    assert secret not in str(stored) and stored == keys.hash_secret(PEPPER, key_id, secret)
    assert record.refusal(datetime.now(UTC)) is None and record.may_call("s1") and not record.may_call("s3")

    before = consumption_stamp()
    with session_scope() as session:
        api_keys.revoke(session, "alice", key_id, "leaked", ADMIN)
    assert consumption_stamp() == before + 1
    with session_scope() as session:
        revoked = api_keys.load_key(session, key_id)
        assert revoked is not None and revoked.refusal(datetime.now(UTC)) == "the API key has been revoked"
        with pytest.raises(ConflictError):
            api_keys.revoke(session, "alice", key_id, "again", ADMIN)


def test_a_blocked_consumer_refuses_its_keys(database_url: str) -> None:
    with session_scope() as session:
        consumers.ensure(session, "bob", ADMIN)
        key, _ = api_keys.create(session, "bob", KeySpec("main"), PEPPER, ADMIN)
    with session_scope() as session:
        consumers.block(session, "bob", "unpaid invoices", ADMIN)
    with session_scope() as session:
        record = api_keys.load_key(session, key.id)
    assert record is not None and record.refusal(datetime.now(UTC)) == "the consumer is blocked: unpaid invoices"


def test_access_loads_service_grant_credential_and_secrets(database_url: str) -> None:
    service_id = live_service()
    with session_scope() as session:
        consumers.ensure(session, "alice", ALICE)
        assert access.load_access(session, "alice", service_id, BOX).grant is None  # type: ignore[union-attr]
        service = services.get(session, service_id)
        service_subscriptions.subscribe(session, "alice", service, PLAN, "USD", ALICE, pending=False)
        credentials.set_credential(session, service_id, "bearer", "Authorization", "upstream-123", BOX, PROVIDER)
        credentials.ensure_signing_secret(session, service_id, BOX, PROVIDER)
    with session_scope() as session:
        record = access.load_access(session, "alice", service_id, BOX)
        raw = session.execute(text("SELECT ciphertext FROM service_credentials")).scalar()
    assert record is not None and record.grant is not None
    assert (record.grant.plan_name, record.grant.requests_per_minute, record.grant.tokens_per_month) == (
        "pro",
        600,
        5000,
    )
    assert record.endpoint["url"] == "https://api.acme.example/v1" and record.pricing["model"] == "per-token"
    assert record.credential is not None and record.credential.header_value == "Bearer upstream-123"
    assert "upstream-123" not in repr(record) and "upstream-123" not in str(raw)
    assert len(record.signing_secrets) == 1 and record.signing_secrets[0].startswith("mks_")
    with session_scope() as session:
        assert access.load_access(session, "alice", "no-such-service", BOX) is None
        with pytest.raises(ConflictError):
            service_subscriptions.subscribe(
                session, "alice", services.get(session, service_id), PLAN, None, ALICE, pending=False
            )


def test_the_gateway_records_last_use_in_batches_without_going_back_in_time(database_url: str) -> None:
    with session_scope() as session:
        consumers.ensure(session, "alice", ALICE)
        key, _ = api_keys.create(session, "alice", KeySpec("k"), PEPPER, ALICE)
    later, earlier = datetime(2030, 1, 2, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)
    with session_scope() as session:
        api_keys.mark_used(session, {key.id: later, "no-such-key": later})
    with session_scope() as session:
        api_keys.mark_used(session, {key.id: earlier})
    with session_scope() as session:
        assert api_keys.get(session, "alice", key.id).last_used_at == later


def test_a_suspended_service_carries_the_reason(database_url: str) -> None:
    service_id = live_service()
    with session_scope() as session:
        services.transition(
            session,
            service_id,
            ServiceStatus.SUSPENDED,
            actor=ADMIN,
            reason="abuse report #12",
            event_type="service_suspended",
        )
    with session_scope() as session:
        record = access.load_access(session, "alice", service_id, BOX)
    assert record is not None and (record.service_status, record.suspension_reason) == ("suspended", "abuse report #12")
