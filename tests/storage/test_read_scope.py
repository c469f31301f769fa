"""Reading sessions (storage/database.py read_scope): one snapshot, no writes, and on SQLite no
wait behind the process's writers."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from storage.database import read_change_stamp, read_scope, session_scope
from storage.models import Service
from storage.repositories import services
from storage.repositories.services import Actor
from storage.search import SearchQuery, document_from_service, get_search_index
from tests.support.specs import make_spec


def create(name: str) -> str:
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(name=name), Actor("acme", "provider"))
        service.status = "active"
        session.flush()
        document = document_from_service(service)
    get_search_index().index(document)
    return service.id


def test_a_read_scope_refuses_to_write(database_url: str) -> None:
    service_id = create("read-only")
    with read_scope() as session:
        services.get(session, service_id).description = "changed"
        with pytest.raises(RuntimeError, match="cannot write"):
            session.flush()
    with read_scope() as session:
        assert services.get(session, service_id).description != "changed"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_searches_and_stamp_reads_do_not_wait_for_a_writer_on_sqlite(database_url: str) -> None:
    """A transaction holding this process's SQLite writer turn (a publication writing) does not hold
    up a search or the cache's change-stamp read; before, both queued behind it."""
    create("unblocked-chat")
    writing, release = threading.Event(), threading.Event()

    def writer() -> None:
        with session_scope() as session:
            session.execute(select(Service.id)).all()  # the transaction began: the turn is held
            writing.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(5)
        began = time.monotonic()
        assert get_search_index().search(SearchQuery(text="unblocked")).total == 1
        assert read_change_stamp() >= 1
        assert time.monotonic() - began < 2  # the writer holds its turn for up to 10 s
    finally:
        release.set()
        thread.join()


def test_a_read_scope_sees_one_snapshot(database_url: str) -> None:
    """Its statements see the database as it was at its first one, whatever commits meanwhile."""
    create("first")
    with read_scope() as session:
        before = session.execute(select(Service.id)).all()
        create("second")  # committed by another session meanwhile
        assert session.execute(select(Service.id)).all() == before
    with read_scope() as session:
        assert len(session.execute(select(Service.id)).all()) == len(before) + 1
