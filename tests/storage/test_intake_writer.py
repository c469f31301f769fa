"""Group commit of submissions (storage/intake_writer.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select

from core.errors import DuplicateServiceError
from storage.database import session_scope
from storage.intake_writer import NewRows, SubmissionWriter
from storage.models import AuditLog, FlowRunRequest, OutboxEvent, Service, ServiceVersion, new_id
from storage.repositories import run_requests, services
from storage.repositories.run_requests import RunSpec
from storage.repositories.services import Actor
from tests.support.specs import make_spec

ACTOR = Actor("acme", "provider")


def rows_of(spec: dict[str, Any], announced: list[str]) -> NewRows:
    service_id, version_id = new_id(), new_id()
    owed = run_requests.request(RunSpec("publish", "a/b", {}, f"publish-{version_id}", service_id, version_id))
    return NewRows(
        objects=[*services.submission(spec, ACTOR, service_id, version_id), owed],
        unique_key=(spec["name"], spec["version"]),
        clash=services.duplicate_error(spec),
        service_ids=[service_id],
        after_commit=[lambda: announced.append(service_id)],
    )


def write_at_once(writer: SubmissionWriter, batch: list[NewRows]) -> list[BaseException | None]:
    barrier = threading.Barrier(len(batch))

    def write(rows: NewRows) -> BaseException | None:
        barrier.wait()
        try:
            writer.write(rows)
        except DuplicateServiceError as exc:
            return exc
        return None

    with ThreadPoolExecutor(len(batch)) as pool:
        return list(pool.map(write, batch))


def counts() -> dict[str, int]:
    with session_scope() as session:
        return {
            model.__name__: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Service, ServiceVersion, AuditLog, OutboxEvent, FlowRunRequest)
        }


def test_submissions_at_once_are_all_written_and_announced(database_url: str) -> None:
    announced: list[str] = []
    batch = [rows_of(make_spec(name=f"svc-{i}"), announced) for i in range(20)]
    assert write_at_once(SubmissionWriter(), batch) == [None] * 20
    assert counts() == dict.fromkeys(counts(), 20)
    assert sorted(announced) == sorted(rows.service_ids[0] for rows in batch), "each once, after its commit"
    with session_scope() as session:
        for rows in batch:
            assert services.get(session, rows.service_ids[0]).status == "submitted"


def test_the_same_name_and_version_at_once_is_stored_once(database_url: str) -> None:
    announced: list[str] = []
    batch = [rows_of(make_spec(name="twin"), announced) for _ in range(2)]
    outcomes = write_at_once(SubmissionWriter(), batch)
    assert sorted(o is None for o in outcomes) == [False, True]
    assert next(o for o in outcomes if o is not None).status_code == 409
    assert counts() == dict.fromkeys(counts(), 1), "nothing of the refused one"
    assert len(announced) == 1


def test_a_clash_with_a_stored_version_refuses_only_that_submission(database_url: str) -> None:
    with session_scope() as session:
        services.create_submitted(session, make_spec(name="taken"), ACTOR)
    announced: list[str] = []
    batch = [rows_of(make_spec(name=name), announced) for name in ("fresh-1", "taken", "fresh-2", "fresh-3")]
    outcomes = write_at_once(SubmissionWriter(), batch)
    assert [o is None for o in outcomes] == [True, False, True, True]
    assert counts()["Service"] == 4
    with session_scope() as session:
        names = set(session.scalars(select(Service.name)))
    assert names == {"taken", "fresh-1", "fresh-2", "fresh-3"}
    assert len(announced) == 3
