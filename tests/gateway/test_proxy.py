"""The gateway's request handling against a local fake provider: one gateway process, PostgreSQL, Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from core.plans import Plan
from core.signing import verify
from storage.models import UsageRecord
from tests.gateway.conftest import Setup
from tests.support.gateway import GatewayProcess, add_service, consumer_with_key, set_credential, set_status

CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}


def chat(gw: GatewayProcess, setup: Setup, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body or CHAT, headers=setup.auth)


def invoke(gw: GatewayProcess, setup: Setup, service_id: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/api/v1/services/{service_id}/invoke", json={"input": {}}, headers=setup.auth)


def rows(setup: Setup, expected: int, timeout: float = 10) -> list[UsageRecord]:
    """The usage rows once `expected` of them are written (the writer works off the hot path)."""
    engine = create_engine(setup.db_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with Session(engine) as session:
                found = list(session.scalars(select(UsageRecord).order_by(UsageRecord.occurred_at)))
            if len(found) >= expected or time.monotonic() > deadline:
                return found
            time.sleep(0.1)
    finally:
        engine.dispose()


def test_invoke_and_chat_pass_through_with_usage_and_cost(setup: Setup) -> None:
    with setup.gateway() as gw:
        invoked = invoke(gw, setup, setup.service_id)
        chatted = chat(gw, setup)
    assert invoked.status_code == 200, invoked.text
    assert chatted.status_code == 200, chatted.text
    assert chatted.json()["choices"][0]["message"]["content"] == "Hello there!"
    assert chatted.headers["X-RateLimit-Limit"] == "1000"
    # two calls taken from a bucket of 1000 (refilling 1000/min, so perhaps one came back meanwhile)
    assert int(chatted.headers["X-RateLimit-Remaining"]) in (998, 999)
    found = rows(setup, 2)
    assert [r.request_id for r in found] == [invoked.headers["X-Request-ID"], chatted.headers["X-Request-ID"]]
    record = found[1]
    assert (record.route, record.status, record.input_tokens, record.output_tokens) == ("chat.completions", 200, 5, 7)
    # 0.0001 per request + 5 x 0.5/1e6 + 7 x 1.5/1e6, exactly
    assert record.cost == Decimal("0.0001") + Decimal(5) * Decimal("0.5") / 10**6 + Decimal(7) * Decimal("1.5") / 10**6
    assert record.consumer_id == "consumer-1"
    assert record.ttfb_ms is not None
    assert record.ttfb_ms <= record.latency_ms


def test_the_provider_gets_its_credential_and_signed_headers_never_the_consumer_key(setup: Setup) -> None:
    secrets = set_credential(setup.service_id, "upstream-credential")
    with setup.gateway() as gw:
        answer = chat(gw, setup)
    assert answer.status_code == 200
    path, headers, _ = setup.provider.requests[-1]
    assert headers["authorization"] == "Bearer upstream-credential"
    assert setup.token not in str(headers)
    request_id = answer.headers["X-Request-ID"]
    assert headers["x-marketplace-consumer"] == "consumer-1"
    assert headers["x-marketplace-request-id"] == request_id
    verify(
        headers["x-marketplace-signature"],
        secrets,
        method="POST",
        path=path,
        consumer_id="consumer-1",
        request_id=request_id,
        now=time.time(),
    )


def test_streaming_passes_events_as_they_arrive_and_records_usage(setup: Setup) -> None:
    setup.provider.chunk_delay = 0.3
    body = {**CHAT, "stream": True}
    with (
        setup.gateway() as gw,
        httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, headers=setup.auth) as r,
    ):
        start = time.monotonic()
        events, first_at = [], None
        for line in r.iter_lines():
            if line.startswith("data:"):
                first_at = first_at or time.monotonic() - start
                events.append(line)
        total = time.monotonic() - start
    gw.stop()
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    # seven events 0.3 s apart: the first arrived long before the last, so nothing was held back
    assert first_at is not None
    assert first_at < total - 1.0
    # the client did not ask for usage: the gateway asked the provider and kept that event to itself
    assert not any('"usage"' in e for e in events)
    assert events[-1] == "data: [DONE]"
    record = rows(setup, 1)[0]
    assert (record.stream, record.input_tokens, record.output_tokens) == (True, 5, 7)
    sent = setup.provider.requests[-1][2]
    assert b"include_usage" in sent


def test_provider_failures_answer_502_and_504_and_charge_nothing(setup: Setup) -> None:
    env = {"MARKETPLACE_GATEWAY__FIRST_BYTE_TIMEOUT_SECONDS": "0.5", "MARKETPLACE_GATEWAY__BREAKER_FAILURES": "50"}
    with setup.gateway(**env) as gw:
        setup.provider.mode = "error500"
        failed = chat(gw, setup)
        setup.provider.mode = "hang"
        timed_out = chat(gw, setup)
        setup.provider.mode = "close"
        dropped = chat(gw, setup)
    assert (failed.status_code, failed.json()["error"]["code"]) == (502, "upstream_error"), failed.text
    assert (timed_out.status_code, timed_out.json()["error"]["code"]) == (504, "upstream_timeout"), timed_out.text
    assert dropped.status_code == 502
    assert failed.json()["error"]["message"]  # OpenAI clients show error.message
    found = rows(setup, 3)
    assert [r.status for r in found] == [502, 504, 502]
    assert all(r.cost == 0 and r.input_tokens == 0 for r in found)


def test_the_breaker_opens_after_repeated_failures(setup: Setup) -> None:
    env = {"MARKETPLACE_GATEWAY__BREAKER_FAILURES": "3", "MARKETPLACE_GATEWAY__BREAKER_RESET_SECONDS": "60"}
    with setup.gateway(**env) as gw:
        setup.provider.mode = "error500"
        codes = [chat(gw, setup).status_code for _ in range(5)]
        calls = len(setup.provider.requests)
        setup.provider.mode = "ok"
        refused = chat(gw, setup)
    assert codes == [502, 502, 502, 503, 503]
    assert calls == 3  # an open circuit does not call the provider
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "upstream_circuit_open"
    assert "Retry-After" in refused.headers


def test_lifecycle_statuses_at_the_gateway(setup: Setup) -> None:
    url = setup.provider.url
    deprecated = add_service(url, name="old-chat")
    retired = add_service(url, name="gone-chat")
    suspended = add_service(url, name="bad-chat")
    pending = add_service(url, name="new-chat", status="testing")
    all_ids = [setup.service_id, deprecated, retired, suspended, pending]
    _, token = consumer_with_key("consumer-2", all_ids, Plan(name="p", requests_per_minute=100))
    setup.token = token
    sunset = datetime.now(UTC) + timedelta(days=30)
    set_status(deprecated, "deprecated", deprecated_at=datetime.now(UTC), sunset_at=sunset)
    set_status(retired, "retired")
    set_status(suspended, "suspended", reason="abuse report under review")
    with setup.gateway() as gw:
        answers = {sid: invoke(gw, setup, sid) for sid in all_ids}
        unknown = httpx.post(f"{gw.url}/api/v1/services/nope/invoke", json={}, headers=setup.auth)
        by_model = httpx.post(
            f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "acme/old-chat"}, headers=setup.auth
        )
    assert answers[setup.service_id].status_code == 200
    assert answers[deprecated].status_code == 200
    assert answers[deprecated].headers["Deprecation"].startswith("@")
    assert "Sunset" in answers[deprecated].headers
    assert by_model.status_code == 200
    assert "Deprecation" in by_model.headers
    assert answers[retired].status_code == 410
    assert answers[suspended].status_code == 403
    assert "abuse report under review" in answers[suspended].json()["error"]["message"]
    assert answers[pending].status_code == 404
    assert unknown.status_code == 404


def test_keys_and_subscriptions_are_checked(setup: Setup) -> None:
    other = add_service(setup.provider.url, name="other-chat")
    with setup.gateway() as gw:
        anonymous = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT)
        wrong = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"})
        x_api_key = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers={"X-API-Key": setup.token})
        unsubscribed = httpx.post(f"{gw.url}/api/v1/services/{other}/invoke", json={}, headers=setup.auth)
        no_model = httpx.post(f"{gw.url}/v1/chat/completions", json={"messages": []}, headers=setup.auth)
    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    assert x_api_key.status_code == 200
    assert unsubscribed.status_code == 403
    assert unsubscribed.json()["error"]["code"] == "not_subscribed"
    assert no_model.status_code == 422
    assert no_model.json()["error"]["details"][0]["pointer"] == "/model"


def test_rate_limit_answers_429_with_retry_after(setup: Setup) -> None:
    setup.new_consumer("consumer-2", Plan(name="tiny", requests_per_minute=3))
    with setup.gateway() as gw:
        answers = [chat(gw, setup) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers[:3]] == ["2", "1", "0"]
    refused = answers[3]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_over_quota_says_which_quota_and_when_it_resets(setup: Setup) -> None:
    setup.new_consumer(
        "consumer-2", Plan(name="q", requests_per_minute=100, requests_per_month=2, tokens_per_month=10**6)
    )
    with setup.gateway() as gw:
        answers = [chat(gw, setup) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    error = answers[2].json()["error"]
    assert (error["code"], error["quota"], error["limit"]) == ("quota_exceeded", "requests_per_month", 2)
    now = datetime.now(UTC)
    first_of_next = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    assert error["resetsAt"] == first_of_next.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("max_tokens", [100])
def test_token_quota_reserves_then_settles_real_usage(setup: Setup, max_tokens: int) -> None:
    # room for one reservation of ~100 output tokens + the prompt estimate, not two at once
    setup.new_consumer("consumer-2", Plan(name="t", requests_per_minute=100, tokens_per_month=190))
    body = {**CHAT, "max_tokens": max_tokens}
    with setup.gateway() as gw:
        # each call settles to its real 12 tokens, so several fit one after the other
        answers = [httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=setup.auth) for _ in range(3)]
        too_big = httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "max_tokens": 500}, headers=setup.auth)
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert too_big.status_code == 429
    assert too_big.json()["error"]["quota"] == "tokens_per_month"
    assert too_big.json()["error"]["used"] == 36
