"""Publishing rate limit (Redis, shared by API processes; per process when Redis is down) and Idempotency-Key."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from storage.database import reset_engine, session_scope
from storage.models import Service
from tests.support import auth
from tests.support.services import REDIS_URL, free_port, require_tcp
from tests.support.specs import make_spec

SERVICES = "/api/v1/services"


def stored_services() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Service)) or 0


@pytest.fixture
def limited(anonymous: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app with a limit of 3 publishing requests per minute, counted in the real Redis."""
    require_tcp("127.0.0.1", 6379, "Redis")
    monkeypatch.setenv("MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT", "3")
    monkeypatch.setenv("MARKETPLACE_RATE_LIMIT__WINDOW_SECONDS", "60")
    monkeypatch.setenv("MARKETPLACE_RATE_LIMIT__REDIS_URL", REDIS_URL)
    reset_engine()
    with TestClient(create_app()) as client:
        yield client


def publisher() -> dict[str, str]:
    """A client of its own (admin publishes for any provider), so runs never share counters."""
    return auth.admin(f"ops-{uuid.uuid4().hex[:8]}")


def test_the_fourth_publish_in_the_window_gets_429(limited: TestClient) -> None:
    me = publisher()
    remaining = []
    for n in range(3):
        response = limited.post(SERVICES, json=make_spec(name=f"rl-{n}"), headers=me)
        assert response.status_code == 202, response.text
        assert response.headers["X-RateLimit-Limit"] == "3"
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert int(response.headers["X-RateLimit-Reset"]) > time.time()
    assert remaining == [2, 1, 0]

    refused = limited.post(SERVICES, json=make_spec(name="rl-3"), headers=me)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert stored_services() == 3, "the refused request stored nothing"

    assert limited.post(SERVICES, json=make_spec(name="rl-other"), headers=publisher()).status_code == 202
    assert limited.get(SERVICES, headers=me).status_code == 200, "reads are not publishing"


def test_counters_are_shared_by_api_processes(limited: TestClient) -> None:
    me = publisher()
    for n in range(2):
        assert limited.post(SERVICES, json=make_spec(name=f"shared-{n}"), headers=me).status_code == 202
    with TestClient(create_app()) as second_process:
        assert second_process.post(SERVICES, json=make_spec(name="shared-2"), headers=me).status_code == 202
        assert second_process.post(SERVICES, json=make_spec(name="shared-3"), headers=me).status_code == 429


def test_without_redis_the_limit_holds_per_process(anonymous: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails open to per-process counting: still limited, still fast, publishing still available."""
    monkeypatch.setenv("MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT", "2")
    monkeypatch.setenv("MARKETPLACE_RATE_LIMIT__REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    reset_engine()
    me = publisher()
    with TestClient(create_app()) as client:
        started = time.monotonic()
        codes = [client.post(SERVICES, json=make_spec(name=f"down-{n}"), headers=me).status_code for n in range(3)]
        elapsed = time.monotonic() - started
    assert codes == [202, 202, 429]
    assert elapsed < 10, f"an unreachable Redis must not stall requests ({elapsed:.1f} s)"


# --- Idempotency-Key -----------------------------------------------------------------------------------


def test_a_retried_publish_is_answered_from_the_first(client: TestClient) -> None:
    key = {"Idempotency-Key": f"publish-{uuid.uuid4()}"}
    first = client.post(SERVICES, json=make_spec(), headers=key)
    again = client.post(SERVICES, json=make_spec(), headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert "Idempotent-Replayed" not in first.headers
    assert stored_services() == 1

    changed = client.post(SERVICES, json=make_spec(name="other-name"), headers=key)
    assert changed.status_code == 422
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    assert changed.json()["error"]["details"][0]["pointer"] == "Idempotency-Key"
    assert stored_services() == 1


def test_keys_belong_to_their_caller_and_refusals_are_replayed_too(client: TestClient) -> None:
    key = {"Idempotency-Key": "same-key-for-everyone"}
    assert client.post(SERVICES, json=make_spec(), headers=key).status_code == 202
    globex = make_spec(name="globex-chat")
    globex["provider"] = {"id": "globex", "name": "Globex"}
    other = client.post(SERVICES, json=globex, headers={**key, **auth.provider("globex")})
    assert other.status_code == 202, "another caller's key of the same name is another key"

    bad = make_spec()
    del bad["category"]
    key = {"Idempotency-Key": f"bad-{uuid.uuid4()}"}
    first = client.post(SERVICES, json=bad, headers=key)
    assert first.status_code == 422
    assert client.post(SERVICES, json=bad, headers=key).json() == first.json()
    assert stored_services() == 2


def test_concurrent_retries_publish_once(client: TestClient) -> None:
    key = {"Idempotency-Key": f"race-{uuid.uuid4()}"}
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda _: client.post(SERVICES, json=make_spec(), headers=key), range(4)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {202, 409}, codes
    ids = {r.json()["serviceId"] for r in responses if r.status_code == 202}
    assert len(ids) == 1
    assert stored_services() == 1
    busy = [r for r in responses if r.status_code == 409]
    assert all(r.json()["error"]["code"] == "idempotency_key_in_use" for r in busy)


def test_a_malformed_key_is_refused(client: TestClient) -> None:
    response = client.post(SERVICES, json=make_spec(), headers={"Idempotency-Key": "x" * 300})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_idempotency_key")
    assert stored_services() == 0
