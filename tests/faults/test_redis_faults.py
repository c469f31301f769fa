"""Redis stopped or hung under the API: reads keep being served from the database, quickly, and
no entry cached before the outage is served after a change made during it.

Each test runs its own redis-server (no persistence) on a free port and signals only that
process; the API runs in-process (TestClient) on a PostgreSQL database of its own. Publish rate
limiting with Redis down is covered with the rate limiter.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from storage.database import reset_engine, session_scope
from storage.repositories import services
from storage.repositories.services import Actor
from storage.search import document_from_service, get_search_index
from tests.faults.helpers import RedisServer, eventually
from tests.support import auth
from tests.support.services import free_port
from tests.support.specs import make_spec
from tests.support.sql import database_reads

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
SEARCH = "/api/v1/services/search"
PROVIDER = auth.provider("acme")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def client(database_url: str, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The API with its cache on our Redis; no Prefect needed for reads (a dead port: fails fast)."""
    monkeypatch.setenv("MARKETPLACE_CACHE__REDIS_URL", redis_server.url)
    monkeypatch.setenv("MARKETPLACE_PREFECT__API_URL", f"http://127.0.0.1:{free_port()}/api")
    reset_engine()
    with TestClient(create_app()) as test_client:
        yield test_client
    reset_engine()


def listed(name: str, description: str) -> str:
    """An active, indexed service of provider acme."""
    with session_scope() as session:
        service = services.create_submitted(
            session, make_spec(name=name, description=description), Actor("acme", "provider")
        )
        service.status = "active"
        service_id = service.id
    with session_scope() as session:
        document = document_from_service(services.get(session, service_id))
    get_search_index().index(document)
    return service_id


def change_description(service_id: str, description: str) -> None:
    """A committed change made by this process (the session listener invalidates the cache)."""
    with session_scope() as session:
        service = services.get(session, service_id)
        service.description = description
        service.spec = {**service.spec, "description": description}


def cached_keys(server: RedisServer, pattern: str) -> list[bytes]:
    return list(redis.Redis.from_url(server.url, socket_timeout=1).scan_iter(pattern))


def read_all(client: TestClient, service_id: str, query: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The service, its status and a search, each checked for 200."""
    service = client.get(f"/api/v1/services/{service_id}", headers=PROVIDER)
    status = client.get(f"/api/v1/services/{service_id}/status", headers=PROVIDER)
    found = client.post(SEARCH, json={"query": query}, headers=PROVIDER)
    for response in (service, status, found):
        assert response.status_code == 200, response.text
    return service.json(), status.json(), found.json()


def test_redis_stopped_the_api_serves_without_cache_and_uses_it_again_when_back(
    client: TestClient, redis_server: RedisServer
) -> None:
    service_id = listed("faults-cached-chat", "Answers questions about the weather")
    service, _, found = read_all(client, service_id, "weather")
    assert service["description"] == "Answers questions about the weather"
    assert [hit["serviceId"] for hit in found["items"]] == [service_id]
    assert cached_keys(redis_server, f"mkt:service:{service_id}:*"), "the read was cached"
    assert cached_keys(redis_server, "mkt:search:*")

    redis_server.stop()
    t0 = time.monotonic()
    for _ in range(10):
        service, status, found = read_all(client, service_id, "weather")
        assert service["description"] == "Answers questions about the weather"
        assert status["status"] == "active"
        assert [hit["serviceId"] for hit in found["items"]] == [service_id]
    assert time.monotonic() - t0 < 5, "thirty reads without Redis"

    change_description(service_id, "Answers questions about the tides")
    assert read_all(client, service_id, "weather")[0]["description"] == "Answers questions about the tides"

    redis_server.start()  # same port, empty
    eventually(
        lambda: (
            client.get(f"/api/v1/services/{service_id}", headers=PROVIDER).status_code == 200
            and cached_keys(redis_server, f"mkt:service:{service_id}:*")
        ),
        15,
        "the cache to be filled again",
    )
    # Reads come from the cache again: the database is not asked.
    assert database_reads(lambda: client.get(f"/api/v1/services/{service_id}", headers=PROVIDER)) == []
    # ... and a change through the API still invalidates it.
    updated = client.put(f"/api/v1/services/{service_id}", json={"description": "Tides and currents"}, headers=PROVIDER)
    assert updated.status_code == 200, updated.text
    assert client.get(f"/api/v1/services/{service_id}", headers=PROVIDER).json()["description"] == "Tides and currents"
    found = client.post(SEARCH, json={"query": "currents"}, headers=PROVIDER).json()
    assert [hit["serviceId"] for hit in found["items"]] == [service_id]


def test_a_hung_redis_costs_one_timeout_and_nothing_stale_is_served_after_it(
    client: TestClient, redis_server: RedisServer
) -> None:
    service_id = listed("faults-hung-cache", "Translates legal documents")
    assert client.get(f"/api/v1/services/{service_id}", headers=PROVIDER).status_code == 200
    assert cached_keys(redis_server, f"mkt:service:{service_id}:*")

    redis_server.pause()  # SIGSTOP: connections hang instead of being refused
    try:
        t0 = time.monotonic()
        for _ in range(10):
            service, _, _ = read_all(client, service_id, "legal")
            assert service["description"] == "Translates legal documents"
        elapsed = time.monotonic() - t0
        # Without the short circuit every read pays three 0.25 s timeouts (token, entry, store).
        assert elapsed < 3, f"thirty reads took {elapsed:.1f} s with Redis hung"
        change_description(service_id, "Translates contracts")  # its invalidation cannot reach Redis
        assert client.get(f"/api/v1/services/{service_id}", headers=PROVIDER).json()["description"] == (
            "Translates contracts"
        )
    finally:
        redis_server.resume()  # the entry cached before the change is still in Redis

    def fresh_and_cached_again() -> bool:
        body = client.get(f"/api/v1/services/{service_id}", headers=PROVIDER).json()
        assert body["description"] == "Translates contracts", "an entry cached before the change was served"
        return len(cached_keys(redis_server, f"mkt:service:{service_id}:*")) == 2  # old entry + the new one

    eventually(fresh_and_cached_again, 10, "the cache to be in use again")
    for _ in range(5):  # served from the cache now, and still the new description
        assert fresh_and_cached_again()
    generation = redis.Redis.from_url(redis_server.url).get(f"mkt:generation:service:{service_id}")
    assert generation is not None and int(generation) >= 1, "the missed invalidation was replayed"
