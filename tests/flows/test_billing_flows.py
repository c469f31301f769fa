"""issue-statements and send-quota-alerts in-process against a real Prefect server, on both backends."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sqlalchemy import func, select

from deployments.stack import Stack
from flows.quota_alerts import send_quota_alerts
from flows.statements import issue_statements
from gateway.writer import store
from notifications.webhooks import EVENT_HEADER
from storage.database import get_engine, reset_engine, session_scope
from storage.models import QuotaAlert, Statement, WebhookDelivery
from storage.repositories import webhooks
from tests.support.billing import call, store_rows, subscribed, usage_row
from tests.support.consumption import live_service
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "quota-alert-test-secret"
NOW = datetime.now(UTC)


def november_usage() -> None:
    service_id = live_service("acme-chat")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [usage_row(c, service_id, start + timedelta(days=n), "0.1") for n in range(20) for c in ("dan", "eve")]
    with session_scope() as session:
        store_rows(session, rows)


def test_the_flow_issues_last_month_once_even_when_run_twice_at_once(
    flow_env: pytest.MonkeyPatch, prefect_server: Stack
) -> None:
    november_usage()
    on_the_first = datetime(2026, 12, 1, 2, tzinfo=UTC)  # as the schedule runs it: the month before
    results = []
    runs = [threading.Thread(target=lambda: results.append(issue_statements(now=on_the_first))) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(120)
    assert len(results) == 2
    assert sum(len(r.issued) for r in results) == 3, "dan, eve and acme: once between the two runs"
    rerun = issue_statements(period="2026-11")
    assert (rerun.issued, rerun.already_issued) == ([], 3)
    with session_scope() as session:
        rows = session.scalars(select(Statement)).all()
    assert sorted((s.party_id, s.total) for s in rows) == [
        ("acme", Decimal("3.60")), ("dan", Decimal("2.00")), ("eve", Decimal("2.00")),
    ]  # fmt: skip
    assert all(s.flow_run_id for s in rows), "each statement names the run that issued it"
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        keyed = ArtifactFilter(key=ArtifactFilterKey(any_=["statements-2026-11"]))
        assert prefect.read_artifacts(artifact_filter=keyed), "the run's summary is on its Artifacts tab"


def test_a_quota_alert_reaches_the_consumers_webhook_once(flow_env: pytest.MonkeyPatch) -> None:
    service_id = live_service("acme-chat")
    with WebhookReceiver(SECRET) as carol_hook, WebhookReceiver(SECRET) as someone_else:
        flow_env.setenv("MARKETPLACE_WEBHOOKS__SECRET", SECRET)
        reset_engine()
        with session_scope() as session:
            webhooks.add_subscription(session, service_id, "carol", carol_hook.url)
            webhooks.add_subscription(session, service_id, "someone-else", someone_else.url)
        sub = subscribed("carol", service_id, requests_per_month=5, tokens_per_month=None)
        store(get_engine(), [call(n, sub, service_id, NOW) for n in range(4)])
        with session_scope() as session:
            (alert_id,) = session.scalars(select(QuotaAlert.id)).all()

        assert send_quota_alerts(alert_id=alert_id) == 1
        assert send_quota_alerts(alert_id=alert_id) == 0, "sent: a second run has nothing to do"
        assert send_quota_alerts() == 0, "nor has the safety net"

        (received,) = carol_hook.received
        assert received.verified, "signed with the webhook secret"
        assert received.headers[EVENT_HEADER.lower()] == "quota_threshold_reached"
        data = json.loads(received.body)["data"]
        assert (data["consumerId"], data["metric"], data["threshold"], data["used"], data["quota"]) == (
            "carol", "requests", 80, 4, 5,
        )  # fmt: skip
        assert someone_else.received == [], "only the consumer whose quota it is"

        store(get_engine(), [call(n, sub, service_id, NOW) for n in range(4, 6)])
        assert send_quota_alerts() == 1, "100 %: the safety net sends what no run was started for"
        assert [json.loads(r.body)["data"]["threshold"] for r in carol_hook.received] == [80, 100]
    with session_scope() as session:
        assert session.scalar(select(func.count()).where(QuotaAlert.notified_at.is_(None))) == 0
        deliveries = session.scalars(select(WebhookDelivery)).all()
        assert [(d.status, d.attempts, d.audience) for d in deliveries] == [("delivered", 1, "consumers")] * 2
