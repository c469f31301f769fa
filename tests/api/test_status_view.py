"""The status view on its own (api/status/view.py): one per app, its memory bounded, its records cached.

No Prefect here: the orchestrator is only asked for run states when a report is rendered.
"""

from __future__ import annotations

import asyncio

import pytest

from api.status.view import STATUS, StatusView
from core.errors import NotFoundError
from core.settings import get_settings
from storage.cache import get_cache
from storage.database import session_scope
from storage.repositories import services
from storage.repositories.services import Actor
from tests.support.specs import make_spec
from tests.support.sql import database_reads


def submitted(count: int) -> list[str]:
    with session_scope() as session:
        return [services.create_submitted(session, make_spec(name=f"svc-{n}"), Actor("acme")).id for n in range(count)]


def new_view(last_served_max: int = 10) -> StatusView:
    return StatusView(get_cache(), orchestrator=None, wait_seconds=1.0, last_served_max=last_served_max)  # type: ignore[arg-type]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_record_is_loaded_once_then_served_from_the_read_cache(database_url: str) -> None:
    view = new_view()
    [service_id] = submitted(1)

    first = database_reads(lambda: view.load(service_id))
    again = database_reads(lambda: view.load(service_id))

    assert len(first) == 1 + 2, first  # the change stamp, then the service with its version and its phases
    assert len(again) == 1, again  # the change stamp only
    token = get_cache().service_token(service_id)
    assert get_cache().get_entry(STATUS, service_id, token)["serviceId"] == service_id  # type: ignore[index]
    assert asyncio.run(view.current(service_id)).status == "submitted"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_unknown_service_is_not_found(database_url: str) -> None:
    with pytest.raises(NotFoundError):
        asyncio.run(new_view().current("no-such-service"))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_each_view_keeps_its_own_bounded_memory(database_url: str) -> None:
    ids = submitted(3)
    small, other = new_view(last_served_max=2), new_view()

    async def read_all() -> None:
        for service_id in ids:
            await small.current(service_id)

    asyncio.run(read_all())

    assert sorted(small._last_served) == sorted(ids[1:]), "least recently served goes first"
    assert len(other._last_served) == 0, "nothing shared between views (apps)"
    assert get_settings().api.status_wait_seconds > 0
