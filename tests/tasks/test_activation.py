"""Activation (tasks/activation.py): one `publishedAt` for the service, the list and search.

The search document is written just before the version goes live; both must carry the instant
the database records, to the microsecond, on SQLite and PostgreSQL. The reads go through the
API in-process (without its lifespan: they need no Prefect server).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.domain import ServiceStatus
from storage.database import session_scope
from storage.repositories import services, versions
from storage.repositories.services import SYSTEM, Actor
from tasks._common import PhaseInput
from tasks.activation import activate_service
from tests.support.specs import make_spec

NAME = "acme-instant"


@pytest.fixture
def api(database_url: str) -> TestClient:
    return TestClient(create_app())


def through_the_checks(version_id: str) -> None:
    """submitted -> validating -> testing, as the pipeline moves a version before activation."""
    for target in (ServiceStatus.VALIDATING, ServiceStatus.TESTING):
        with session_scope() as session:
            versions.transition(session, version_id, target, actor=SYSTEM, reason="checked")


def activate(service_id: str, version_id: str) -> None:
    through_the_checks(version_id)
    activate_service.fn(PhaseInput(service_id=service_id, version_id=version_id))


def published_at_everywhere(api: TestClient, service_id: str) -> list[Any]:
    one = api.get(f"/api/v1/services/{service_id}").json()["publishedAt"]
    listed = [s["publishedAt"] for s in api.get("/api/v1/services").json()["items"] if s["id"] == service_id]
    search = api.post("/api/v1/services/search", json={"query": NAME}).json()["items"]
    found = [hit["publishedAt"] for hit in search if hit["serviceId"] == service_id]
    return [one, *listed, *found]


def test_published_at_is_one_instant_in_the_service_the_list_and_search(api: TestClient) -> None:
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(name=NAME), Actor("acme", "provider"))
        service_id, first_id = service.id, versions.for_service(session, service.id)[0].id
    activate(service_id, first_id)
    first = published_at_everywhere(api, service_id)
    assert len(first) == 3 and first[0] is not None
    assert first == [first[0]] * 3

    with session_scope() as session:  # a new version replaces the live one: its own instant, everywhere
        service = services.get(session, service_id)
        second_id = versions.create_next(session, service, make_spec(name=NAME, version="1.1.0"), SYSTEM).id
    activate(service_id, second_id)
    second = published_at_everywhere(api, service_id)
    assert second == [second[0]] * 3
    assert second[0] > first[0]
