"""Access to services over HTTP: plans, subscriptions, and approval by a real approve-access run.

The API starts approve-access runs on the real Prefect test server; with no worker there, the
test executes each run in-process (as the warm worker would) so it suspends, and again after
the API resumed it with the decision.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.exceptions import Pause
from prefect.flow_engine import run_flow
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import text

from core.settings import get_settings
from deployments.stack import Stack
from flows.approve_access import approve_access, expire_access_requests
from storage.database import session_scope
from storage.encryption import box_for
from storage.repositories import access, outbox
from tasks.access import AccessRef, open_access_wait
from tests.support import auth
from tests.support.consumption import live_service

SUBSCRIPTIONS = "/api/v1/consumers/me/subscriptions"
ALICE = auth.consumer("alice")


@pytest.fixture
def client(anonymous: TestClient, prefect_server: Stack) -> Iterator[TestClient]:
    """Called as consumer "alice"; flows run in this process talk to the test server."""
    anonymous.headers.update(ALICE)
    with temporary_settings({PREFECT_API_URL: prefect_server.config.prefect_api_url}):
        yield anonymous


def execute(flow_run_id: str) -> str:
    """Run the approve-access run here, as a worker would; returns its Prefect state type after."""
    with SyncPrefectClient(get_settings().prefect.api_url) as prefect:
        run = prefect.read_flow_run(UUID(flow_run_id))
        with contextlib.suppress(Pause):  # suspended: the engine recorded it before raising
            run_flow(approve_access, flow_run=run, return_type="state")
        state = prefect.read_flow_run(UUID(flow_run_id)).state
    assert state is not None
    return state.type.value


def test_plans_are_published_with_the_service(client: TestClient) -> None:
    service_id = live_service()
    plans = client.get(f"/api/v1/services/{service_id}/plans").json()
    assert plans["accessApproval"] is False and plans["approvalReason"] is None
    assert [(p["name"], p["requestsPerMinute"], p["default"]) for p in plans["items"]] == [
        ("starter", 60, True),
        ("pro", 600, False),
    ]
    assert plans["items"][1]["currency"] == "USD"
    restricted = live_service(name="vault-chat", compliance={"level": "restricted"})
    assert client.get(f"/api/v1/services/{restricted}/plans").json()["accessApproval"] is True


def test_an_open_service_is_active_at_once_and_can_be_cancelled(client: TestClient) -> None:
    service_id = live_service()
    response = client.post(SUBSCRIPTIONS, json={"serviceId": service_id, "plan": "pro"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["planName"], body["requestsPerMinute"], body["tokensPerMonth"]) == (
        "active",
        "pro",
        600,
        50_000_000,
    )
    assert body["accessRequest"] is None and body["serviceName"] == "acme-chat"
    with session_scope() as session:
        record = access.load_access(session, "alice", service_id, box_for(get_settings().consumption))
        events = [e.event_type for e in outbox.for_aggregate(session, service_id)]
    assert record is not None and record.grant is not None and record.grant.plan_name == "pro"
    assert len(record.signing_secrets) == 1, "a signing secret exists once someone may call"
    assert "subscription_activated" in events

    again = client.post(SUBSCRIPTIONS, json={"serviceId": service_id})
    assert again.status_code == 409
    listed = client.get(SUBSCRIPTIONS).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == body["id"]
    changed = client.patch(f"{SUBSCRIPTIONS}/{body['id']}", json={"plan": "starter"})
    assert changed.status_code == 200 and changed.json()["requestsPerMinute"] == 60
    assert client.patch(f"{SUBSCRIPTIONS}/{body['id']}", json={"plan": "gold"}).status_code == 422

    subscribers = client.get(f"/api/v1/services/{service_id}/subscribers", headers=auth.provider()).json()
    assert [s["consumerId"] for s in subscribers["items"]] == ["alice"]
    assert client.get(f"/api/v1/services/{service_id}/subscribers", headers=auth.provider("other")).status_code == 403
    assert client.get(f"/api/v1/services/{service_id}/subscribers").status_code == 403

    cancelled = client.delete(f"{SUBSCRIPTIONS}/{body['id']}", params={"reason": "moving on"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    with session_scope() as session:
        record = access.load_access(session, "alice", service_id, box_for(get_settings().consumption))
    assert record is not None and record.grant is None
    assert client.delete(f"{SUBSCRIPTIONS}/{body['id']}").status_code == 409
    assert client.delete(f"{SUBSCRIPTIONS}/{body['id']}", headers=auth.consumer("bob")).status_code == 404


@pytest.mark.parametrize("status", ["retired", "suspended", "failed", "submitted"])
def test_only_live_services_can_be_subscribed(client: TestClient, status: str) -> None:
    service_id = live_service(status=status)
    refused = client.post(SUBSCRIPTIONS, json={"serviceId": service_id})
    assert refused.status_code in (404, 409), refused.text  # not-live services are invisible to consumers


def test_a_deprecated_service_keeps_its_subscribers_only(client: TestClient) -> None:
    service_id = live_service()
    first = client.post(SUBSCRIPTIONS, json={"serviceId": service_id}).json()
    client.delete(f"{SUBSCRIPTIONS}/{first['id']}")
    with session_scope() as session:
        session.execute(text("UPDATE services SET status = 'deprecated' WHERE id = :id"), {"id": service_id})
    assert client.post(SUBSCRIPTIONS, json={"serviceId": service_id}).status_code == 201, "an existing subscriber"
    newcomer = client.post(SUBSCRIPTIONS, json={"serviceId": service_id}, headers=auth.consumer("bob"))
    assert newcomer.status_code == 409 and "deprecated" in newcomer.json()["error"]["message"]
    unknown_plan = client.post(SUBSCRIPTIONS, json={"serviceId": live_service(name="x2"), "plan": "gold"})
    assert unknown_plan.status_code == 422 and unknown_plan.json()["error"]["details"][0]["pointer"] == "/plan"


def subscribe_pending(client: TestClient, service_id: str) -> dict[str, str]:
    response = client.post(SUBSCRIPTIONS, json={"serviceId": service_id, "message": "for our support bot"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending"
    request = body["accessRequest"]
    assert request["status"] == "pending"
    return {"subscription": body["id"], "request": request["id"], "run": started_run(client, body["id"])}


def started_run(client: TestClient, subscription_id: str, timeout: float = 30.0) -> str:
    """The approve-access run's id, once the run starter has created it (the API answers before)."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"{SUBSCRIPTIONS}/{subscription_id}").json()["accessRequest"]["flowRun"]
        if run and run["id"]:
            return str(run["id"])
        assert time.monotonic() < deadline, f"no approve-access run started for {subscription_id}"
        time.sleep(0.02)


def test_restricted_access_waits_and_the_providers_approval_resumes_the_run(client: TestClient) -> None:
    service_id = live_service(name="vault-chat", compliance={"level": "restricted"})
    pending = subscribe_pending(client, service_id)
    assert execute(pending["run"]) == "PAUSED", "the run suspends and waits"

    queue = client.get("/api/v1/access-requests", headers=auth.provider()).json()
    assert [r["id"] for r in queue["items"]] == [pending["request"]]
    assert queue["items"][0]["message"] == "for our support bot"
    assert client.get("/api/v1/access-requests", headers=auth.provider("other")).json()["total"] == 0
    assert client.get("/api/v1/access-requests", headers=auth.governance()).json()["total"] == 1
    decision = f"/api/v1/access-requests/{pending['request']}/decision"
    assert client.post(decision, json={"decision": "approve"}).status_code == 404, "not the consumer's to decide"
    assert client.post(decision, json={"decision": "approve"}, headers=auth.provider("other")).status_code == 403

    accepted = client.post(decision, json={"decision": "approve", "comment": "DPA signed"}, headers=auth.provider())
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["flowRunId"] == pending["run"]
    assert execute(pending["run"]) == "COMPLETED"

    subscription = client.get(f"{SUBSCRIPTIONS}/{pending['subscription']}").json()
    assert subscription["status"] == "active"
    request = subscription["accessRequest"]
    assert (request["status"], request["reviewer"], request["reviewerRole"], request["comment"]) == (
        "approved",
        "acme",
        "provider",
        "DPA signed",
    )
    assert client.post(decision, json={"decision": "reject"}, headers=auth.provider()).status_code == 409
    trail = client.get("/api/v1/audit", params={"consumerId": "alice"}, headers=auth.admin()).json()["items"]
    assert [e["action"] for e in trail][:3] == ["subscription_activated", "access_decided", "access_decision_submitted"]


def test_governance_rejects_access_and_nothing_opens(client: TestClient) -> None:
    service_id = live_service(name="vault-chat", compliance={"level": "confidential"})
    pending = subscribe_pending(client, service_id)
    execute(pending["run"])
    decision = f"/api/v1/access-requests/{pending['request']}/decision"
    rejected = client.post(decision, json={"decision": "reject", "comment": "no DPA"}, headers=auth.governance())
    assert rejected.status_code == 202
    assert execute(pending["run"]) == "COMPLETED"
    subscription = client.get(f"{SUBSCRIPTIONS}/{pending['subscription']}").json()
    assert (subscription["status"], subscription["endedReason"]) == ("rejected", "no DPA")
    assert subscription["accessRequest"]["status"] == "rejected"
    assert client.post(SUBSCRIPTIONS, json={"serviceId": service_id}).status_code == 202, "may ask again"


def test_a_provider_that_asks_for_approval_gets_asked(client: TestClient) -> None:
    spec_pricing = {"model": "free", "accessApproval": True}
    service_id = live_service(name="picky-chat", pricing=spec_pricing)
    pending = subscribe_pending(client, service_id)
    request = client.get(f"/api/v1/access-requests/{pending['request']}").json()
    assert request["reason"] == "the provider approves each consumer's access"
    assert request["subscriptionId"] == pending["subscription"]


def test_an_undecided_request_expires(client: TestClient) -> None:
    service_id = live_service(name="vault-chat", compliance={"level": "restricted"})
    pending = subscribe_pending(client, service_id)
    assert execute(pending["run"]) == "PAUSED"
    request = client.get(f"/api/v1/access-requests/{pending['request']}").json()
    deadline = datetime.fromisoformat(request["expiresAt"])
    assert timedelta(days=6) < deadline - datetime.now(UTC) <= timedelta(days=7)

    assert expire_access_requests(now=deadline - timedelta(seconds=1)) == 0
    assert expire_access_requests(now=deadline) == 1
    subscription = client.get(f"{SUBSCRIPTIONS}/{pending['subscription']}").json()
    assert (subscription["status"], subscription["accessRequest"]["status"]) == ("expired", "expired")
    late = client.post(
        f"/api/v1/access-requests/{pending['request']}/decision", json={"decision": "approve"}, headers=auth.admin()
    )
    assert late.status_code == 409 and "expired" in late.json()["error"]["message"]


def test_the_run_times_out_only_after_the_requests_deadline(client: TestClient) -> None:
    """Prefect fails the paused run at its timeout and that failure triggers the expiry: a timeout
    ending before the deadline (a fraction of a second is enough) would expire nothing."""
    service_id = live_service(name="vault-chat", compliance={"level": "restricted"})
    pending = subscribe_pending(client, service_id)
    deadline = datetime.now(UTC) + timedelta(seconds=24, milliseconds=600)
    with session_scope() as session:
        session.execute(text("UPDATE access_requests SET expires_at = :t"), {"t": deadline})
    started = datetime.now(UTC)
    wait = open_access_wait.fn(AccessRef(access_request_id=pending["request"]))
    assert wait.status == "pending"
    assert started + timedelta(seconds=wait.timeout_seconds) > deadline
    assert wait.timeout_seconds <= 27


def test_a_decision_after_the_deadline_expires_the_request(client: TestClient) -> None:
    service_id = live_service(name="vault-chat", compliance={"level": "restricted"})
    pending = subscribe_pending(client, service_id)
    past = datetime.now(UTC) - timedelta(seconds=1)
    with session_scope() as session:
        session.execute(text("UPDATE access_requests SET expires_at = :t"), {"t": past})
    decision = f"/api/v1/access-requests/{pending['request']}/decision"
    late = client.post(decision, json={"decision": "approve"}, headers=auth.governance())
    assert late.status_code == 409
    assert client.get(f"{SUBSCRIPTIONS}/{pending['subscription']}").json()["status"] == "expired"


def test_cancelling_a_pending_subscription_cancels_its_run(client: TestClient) -> None:
    service_id = live_service(name="vault-chat", compliance={"level": "restricted"})
    pending = subscribe_pending(client, service_id)
    assert execute(pending["run"]) == "PAUSED"
    cancelled = client.delete(f"{SUBSCRIPTIONS}/{pending['subscription']}")
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["accessRequest"]["status"]) == ("cancelled", "cancelled")
    with SyncPrefectClient(get_settings().prefect.api_url) as prefect:
        state = prefect.read_flow_run(UUID(pending["run"])).state
    assert state is not None and state.type.value == "CANCELLED"
