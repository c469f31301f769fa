"""A consumer on the running stack: subscribe, get a key, call a published service through the gateway
with the official `openai` client (plain and streaming), see the usage; the provider sees it too and
gets its own credential and the marketplace's signed headers, never the consumer's key; deprecation
and retirement show at the gateway."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from deployments.stack import Stack
from tests.e2e.conftest import GRACE, eventually
from tests.support import auth
from tests.support.provider import FakeProvider, good_spec

pytestmark = pytest.mark.e2e
Wait = Callable[..., dict[str, Any]]
UPSTREAM_KEY = "upstream-key-of-acme"


def published(api: httpx.Client, wait_until_settled: Wait, provider: FakeProvider, name: str) -> str:
    """A service published through the pipeline, with the provider's credential for it given."""
    accepted = api.post("/api/v1/services", json=good_spec(provider.url, name=name))
    assert accepted.status_code == 202, accepted.text
    service_id = str(accepted.json()["serviceId"])
    assert wait_until_settled(service_id, status="active")["status"] == "active"
    credential = api.put(f"/api/v1/services/{service_id}/credential", json={"scheme": "bearer", "value": UPSTREAM_KEY})
    assert credential.status_code in (200, 204), credential.text
    return service_id


def key_for(api: httpx.Client, consumer: str, service_id: str) -> str:
    """Subscribe `consumer` under the service's default plan and make it an API key; returns the secret."""
    headers = auth.consumer(consumer)
    subscribed = api.post("/api/v1/consumers/me/subscriptions", json={"serviceId": service_id}, headers=headers)
    assert subscribed.status_code == 201, subscribed.text
    assert subscribed.json()["status"] == "active"
    created = api.post("/api/v1/consumers/me/keys", json={"name": "e2e"}, headers=headers)
    assert created.status_code == 201, created.text
    secret = str(created.json()["secret"])
    assert secret.startswith("mk_live_")
    return secret


def usage(api: httpx.Client, path: str, headers: dict[str, str], calls: int) -> dict[str, Any] | None:
    body: dict[str, Any] = api.get(path, headers=headers).json()
    return body if body["total"] >= calls else None


def test_a_consumer_calls_a_published_service_with_the_openai_client_and_sees_its_usage(
    api: httpx.Client, wait_until_settled: Wait, e2e_stack: Stack
) -> None:
    with FakeProvider() as provider:
        service_id = published(api, wait_until_settled, provider, "e2e-consumed")
        secret = key_for(api, "carol", service_id)
        client = openai.OpenAI(base_url=f"{e2e_stack.config.gateway_url}/v1", api_key=secret, max_retries=0)

        reply = client.chat.completions.create(model="acme/e2e-consumed", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "Hello!"
        assert reply.usage is not None
        assert reply.usage.total_tokens == 12
        stream = client.chat.completions.create(
            model="e2e-consumed", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "Hello!"

        assert len(provider.received) == 2
        for headers in provider.received:
            lowered = {k.lower(): v for k, v in headers.items()}
            assert lowered["authorization"] == f"Bearer {UPSTREAM_KEY}", "the provider's own credential"
            assert lowered["x-marketplace-consumer"] == "carol"
            assert "x-marketplace-signature" in lowered
            assert secret not in str(headers), "the consumer's key never reaches the provider"

    mine = eventually(
        lambda: usage(api, "/api/v1/consumers/me/usage", auth.consumer("carol"), 2), 30, "the consumer's usage"
    )
    assert {item["serviceId"] for item in mine["items"]} == {service_id}
    assert mine["totals"]["requests"] == 2
    assert mine["totals"]["inputTokens"] == 10
    assert mine["totals"]["outputTokens"] == 14
    assert all(Decimal(amount) > 0 for amount in mine["totals"]["cost"].values())
    theirs = usage(api, f"/api/v1/services/{service_id}/usage", auth.provider(), 2)
    assert theirs is not None, "the provider sees the calls to its service"
    assert theirs["totals"] == mine["totals"]


def test_deprecation_and_retirement_show_at_the_gateway(
    api: httpx.Client, wait_until_settled: Wait, e2e_stack: Stack
) -> None:
    with FakeProvider() as provider:
        service_id = published(api, wait_until_settled, provider, "e2e-sunset")
        secret = key_for(api, "dave", service_id)
        gateway = httpx.Client(base_url=e2e_stack.config.gateway_url, headers={"Authorization": f"Bearer {secret}"})
        call = {"model": "e2e-sunset", "messages": [{"role": "user", "content": "hi"}]}
        with gateway:
            assert gateway.post("/v1/chat/completions", json=call).status_code == 200
            assert api.delete(f"/api/v1/services/{service_id}").status_code == 202

            def deprecated() -> httpx.Response | None:
                answer = gateway.post("/v1/chat/completions", json=call)
                return answer if answer.status_code == 200 and "Deprecation" in answer.headers else None

            answer = eventually(deprecated, 60, "the gateway to answer with Deprecation")
            assert "Sunset" in answer.headers
            retired = eventually(
                lambda: (r := gateway.post("/v1/chat/completions", json=call)).status_code == 410 and r,
                GRACE + 90,
                "the gateway to answer 410 once retired",
            )
            assert retired.json()["error"]["code"]
