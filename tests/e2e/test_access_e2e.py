"""Access approval through the running stack: the worker runs approve-access, the Prefect UI's
Resume form (its API) answers it, and an unanswered request expires through the deployment's trigger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient

from deployments.stack import Stack
from tests.e2e.conftest import APPROVAL_TIMEOUT, eventually
from tests.support import auth
from tests.support.provider import FakeProvider, good_spec

pytestmark = pytest.mark.e2e
Wait = Callable[..., dict[str, Any]]


def picky_service(api: httpx.Client, wait_until_settled: Wait, provider_url: str, name: str) -> str:
    """A public service whose provider approves each consumer: published through the pipeline."""
    spec = good_spec(provider_url, name=name)
    spec["pricing"]["accessApproval"] = True
    response = api.post("/api/v1/services", json=spec)
    assert response.status_code == 202, response.text
    service_id = str(response.json()["serviceId"])
    assert wait_until_settled(service_id, status="active")["status"] == "active"
    return service_id


def subscription(api: httpx.Client, consumer: str, subscription_id: str) -> dict[str, Any]:
    path = f"/api/v1/consumers/me/subscriptions/{subscription_id}"
    body: dict[str, Any] = api.get(path, headers=auth.consumer(consumer)).json()
    return body


def waiting_run(api: httpx.Client, consumer: str, subscription_id: str) -> dict[str, Any] | None:
    request = subscription(api, consumer, subscription_id)["accessRequest"]
    return request if (request["flowRun"] or {}).get("state") == "PAUSED" else None


def test_access_approved_from_the_prefect_ui_opens_the_subscription(
    api: httpx.Client, wait_until_settled: Wait, e2e_stack: Stack
) -> None:
    with FakeProvider() as provider:
        service_id = picky_service(api, wait_until_settled, provider.url, "e2e-picky")
    asked = api.post(
        "/api/v1/consumers/me/subscriptions",
        json={"serviceId": service_id, "plan": "pro"},
        headers=auth.consumer("eve"),
    )
    assert asked.status_code == 202, asked.text
    subscription_id = asked.json()["id"]
    request = eventually(lambda: waiting_run(api, "eve", subscription_id), 60, "the approve-access run to suspend")

    with SyncPrefectClient(e2e_stack.config.prefect_api_url) as prefect:  # what the UI's Resume form posts
        run_input = {"decision": "approve", "reviewer": "ui-reviewer", "comment": "fine by us"}
        assert prefect.resume_flow_run(UUID(request["flowRun"]["id"]), run_input=run_input).status.value == "ACCEPT"

    def active() -> dict[str, Any] | None:
        body = subscription(api, "eve", subscription_id)
        return body if body["status"] == "active" else None

    done = eventually(active, 60, "the subscription to open")
    assert (done["accessRequest"]["reviewer"], done["accessRequest"]["status"]) == ("ui-reviewer", "approved")
    assert done["planName"] == "pro"


def test_an_unanswered_access_request_expires(api: httpx.Client, wait_until_settled: Wait) -> None:
    with FakeProvider() as provider:
        service_id = picky_service(api, wait_until_settled, provider.url, "e2e-picky-expire")
    asked = api.post("/api/v1/consumers/me/subscriptions", json={"serviceId": service_id}, headers=auth.consumer("zed"))
    assert asked.status_code == 202, asked.text
    subscription_id = asked.json()["id"]
    eventually(lambda: waiting_run(api, "zed", subscription_id), 60, "the approve-access run to suspend")

    def expired() -> dict[str, Any] | None:
        body = subscription(api, "zed", subscription_id)
        return body if body["status"] == "expired" else None

    done = eventually(expired, APPROVAL_TIMEOUT + 90, "Prefect to fail the run and the trigger to expire the request")
    assert done["accessRequest"]["status"] == "expired"
    decision = f"/api/v1/access-requests/{done['accessRequest']['id']}/decision"
    assert api.post(decision, json={"decision": "approve"}).status_code == 409
