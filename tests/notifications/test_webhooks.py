"""Signed webhooks against a local receiver: signatures, retries, recorded attempts, the notify task."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings

from core.domain import Audience
from core.settings import get_settings
from deployments.stack import Stack
from notifications.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    deliver,
    sign,
    verify_signature,
)
from storage.database import reset_engine, session_scope
from storage.models import WebhookDelivery
from storage.repositories import services, webhooks
from storage.repositories.services import Actor
from storage.repositories.webhooks import DeliveryFilter, NewEvent
from tasks.notify import DeliveriesPending, NotificationInput, notify
from tasks.notify import report as notification_report
from tests.support.specs import make_spec
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "webhook-test-secret"
Configure = Callable[..., None]


@pytest.fixture
def configure(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Configure]:
    """Set the webhook settings through the environment, as a deployment would."""

    def apply(urls: list[str] | None = None, *, max_attempts: int = 3, timeout: float = 2.0) -> None:
        monkeypatch.setenv("MARKETPLACE_WEBHOOKS__SECRET", SECRET)
        monkeypatch.setenv("MARKETPLACE_WEBHOOKS__GOVERNANCE_URLS", json.dumps(urls or []))
        monkeypatch.setenv("MARKETPLACE_WEBHOOKS__MAX_ATTEMPTS", str(max_attempts))
        monkeypatch.setenv("MARKETPLACE_WEBHOOKS__TIMEOUT_SECONDS", str(timeout))
        reset_engine()

    yield apply
    reset_engine()


def new_service() -> str:
    with session_scope() as session:
        return services.create_submitted(session, make_spec(), Actor("acme", "provider")).id


def new_delivery(service_id: str, url: str) -> WebhookDelivery:
    event = NewEvent("evt-1", "service_published", service_id, "governance", {"id": "evt-1", "data": {"n": 1}})
    with session_scope() as session:
        return webhooks.create_deliveries(session, event, [url])[0]


def attempts_of(delivery_id: str) -> list[tuple[int, int | None]]:
    with session_scope() as session:
        return [(a.attempt, a.status_code) for a in webhooks.attempts_for(session, [delivery_id])[delivery_id]]


def governance_event(service_id: str, **data: Any) -> NotificationInput:
    return NotificationInput(service_id=service_id, event_type="service_published", audience="governance", data=data)


def test_a_delivery_is_signed_and_verifiable(configure: Configure) -> None:
    with WebhookReceiver(SECRET) as receiver:
        configure()
        delivery = new_delivery(new_service(), receiver.url)
        result = deliver(delivery, get_settings().webhooks)
    assert (result.delivered, result.attempt, result.status_code, result.error) == (True, 1, 200, None)
    [received] = receiver.received
    assert received.verified
    assert received.headers[EVENT_HEADER.lower()] == "service_published"
    assert received.headers[DELIVERY_HEADER.lower()] == delivery.id
    assert received.headers[SIGNATURE_HEADER.lower()].startswith("sha256=")
    assert abs(int(received.headers[TIMESTAMP_HEADER.lower()]) - time.time()) < 60
    assert json.loads(received.body) == {"id": "evt-1", "data": {"n": 1}}
    with session_scope() as session:
        row = webhooks.get_delivery(session, delivery.id)
        assert (row.status, row.attempts, row.last_status_code, row.delivered_at is not None) == (
            "delivered",
            1,
            200,
            True,
        )
    assert attempts_of(delivery.id) == [(1, 200)]


def test_a_tampered_body_a_wrong_secret_or_an_old_timestamp_fails_verification() -> None:
    body = b'{"type":"marketplace.service_published","data":{"price":1}}'
    timestamp = str(int(time.time()))
    header = sign(SECRET, timestamp, body)
    assert verify_signature(SECRET, timestamp, body, header)
    assert verify_signature(SECRET, timestamp, body.decode(), header)
    assert not verify_signature(SECRET, timestamp, body.replace(b"1", b"0"), header)
    assert not verify_signature("another-secret", timestamp, body, header)
    assert not verify_signature(SECRET, str(int(timestamp) + 1), body, header), "the timestamp is signed too"
    assert not verify_signature(SECRET, "not-a-number", body, header)
    assert not verify_signature(SECRET, timestamp, body, header, now=time.time() + 301), "a replay past tolerance"
    assert verify_signature(SECRET, timestamp, body, header, tolerance=600, now=time.time() + 301)


def test_a_receiver_that_refuses_a_tampered_body_is_not_delivered(configure: Configure) -> None:
    with WebhookReceiver("not-the-shared-secret") as receiver:
        configure()
        delivery = new_delivery(new_service(), receiver.url)
        result = deliver(delivery, get_settings().webhooks)
    assert (result.delivered, result.status_code, result.status) == (False, 401, "pending")
    assert not receiver.received[0].verified


def test_500_then_200_is_retried_and_every_attempt_recorded(configure: Configure) -> None:
    with WebhookReceiver(SECRET, fail_first=2) as receiver:
        configure([receiver.url], max_attempts=5)
        inp = governance_event(new_service())
        for _ in range(2):
            with pytest.raises(DeliveriesPending):
                notify.fn(inp)
        report = notify.fn(inp)
    [delivery] = report.deliveries
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)
    assert attempts_of(delivery.delivery_id) == [(1, 500), (2, 500), (3, 200)]
    assert [r.answered for r in receiver.received] == [500, 500, 200]
    assert all(r.verified for r in receiver.received), "every retry is signed afresh"
    assert len({r.headers[DELIVERY_HEADER.lower()] for r in receiver.received}) == 1


def test_an_always_failing_receiver_ends_failed_after_max_attempts(configure: Configure) -> None:
    with WebhookReceiver(SECRET, always_fail=True, fail_status=503) as receiver:
        configure([receiver.url], max_attempts=3)
        inp = governance_event(new_service())
        for _ in range(2):
            with pytest.raises(DeliveriesPending):
                notify.fn(inp)
        report = notify.fn(inp)
        again = notify.fn(inp)
    assert report.count("failed") == 1
    assert again == report, "a failed delivery is final: nothing is sent again"
    assert len(receiver.received) == 3
    with session_scope() as session:
        [row], total = webhooks.list_deliveries(session, DeliveryFilter(status="failed"), 0, 10)
        assert (total, row.attempts, row.last_status_code) == (1, 3, 503)
        assert "HTTP 503" in (row.last_error or "")
    assert attempts_of(row.id) == [(1, 503), (2, 503), (3, 503)]


def test_redirects_are_not_followed(configure: Configure) -> None:
    with WebhookReceiver(SECRET) as elsewhere, WebhookReceiver(SECRET, redirect_to=elsewhere.url) as receiver:
        configure()
        result = deliver(new_delivery(new_service(), receiver.url), get_settings().webhooks)
    assert (result.delivered, result.status_code) == (False, 302)
    assert "not followed" in (result.error or "")
    assert len(receiver.received) == 1
    assert elsewhere.received == []


def test_a_slow_or_absent_receiver_is_a_recorded_error(configure: Configure) -> None:
    with WebhookReceiver(SECRET, delay=1.0) as slow:
        configure(timeout=0.2)
        service_id = new_service()
        timed_out = deliver(new_delivery(service_id, slow.url), get_settings().webhooks)
    gone = deliver(new_delivery(service_id, slow.url.replace("/hooks", "/gone")), get_settings().webhooks)
    assert timed_out.status_code is None
    assert "Timeout" in (timed_out.error or "")
    assert gone.status_code is None
    assert "ConnectError" in (gone.error or "")


def test_notify_is_idempotent_per_event_and_url(configure: Configure) -> None:
    with WebhookReceiver(SECRET) as first, WebhookReceiver(SECRET) as second:
        configure([first.url, second.url, first.url])
        service_id = new_service()
        inp = governance_event(service_id, versionId="v1")
        report = notify.fn(inp)
        again = notify.fn(inp)
        other_run = notify.fn(inp.model_copy(update={"flow_run_id": "another-run"}))
    assert report == again
    assert {d.url for d in report.deliveries} == {first.url, second.url}
    assert report.count("delivered") == 2
    assert (len(first.received), len(second.received)) == (2, 2), "once for each of the two events"
    assert other_run.event_id != report.event_id
    body = json.loads(first.received[0].body)
    assert body["id"] == report.event_id
    assert body["type"] == "marketplace.service_published"
    assert body["data"]["serviceId"] == service_id
    assert body["data"]["versionId"] == "v1"
    with session_scope() as session:
        assert webhooks.list_deliveries(session, DeliveryFilter(service_id=service_id), 0, 10)[1] == 4


def test_consumers_are_their_subscriptions_and_no_urls_is_an_empty_report(configure: Configure) -> None:
    with WebhookReceiver(SECRET) as receiver:
        configure([])
        service_id = new_service()
        assert notify.fn(governance_event(service_id)).deliveries == []
        deprecated = NotificationInput(service_id=service_id, event_type="service_deprecated", audience="consumers")
        assert notify.fn(deprecated).deliveries == []
        with session_scope() as session:
            webhooks.add_subscription(session, service_id, "carol", receiver.url)
        report = notify.fn(deprecated)
    assert [(d.url, d.status) for d in report.deliveries] == [(receiver.url, "delivered")]
    with session_scope() as session:
        [row], _ = webhooks.list_deliveries(session, DeliveryFilter(audience=Audience.CONSUMERS), 0, 10)
        assert row.event_type == "service_deprecated"


def test_prefect_retries_the_task_and_its_last_try_records_the_failure(
    configure: Configure, prefect_server: Stack
) -> None:
    """Called as the flows call it: retried with backoff, and the last try fails what is left instead of raising."""
    quick = notify.with_options(retries=2, retry_delay_seconds=0.05)

    @flow
    def publish_and_tell(inp: NotificationInput) -> str:
        told = quick(inp, return_state=True)
        return f"published; notification {told.type.value}"

    with WebhookReceiver(SECRET, always_fail=True) as receiver:
        configure([receiver.url], max_attempts=10)  # more than the task's retries: its last try decides
        inp = governance_event(new_service())
        with temporary_settings({PREFECT_API_URL: prefect_server.config.prefect_api_url}):
            state = publish_and_tell(inp, return_state=True)
    assert state.result() == "published; notification COMPLETED"
    report = notification_report(inp.event_id())
    assert [(d.status, d.attempts) for d in report.deliveries] == [("failed", 3)]
    assert len(receiver.received) == 3
