"""Flow runs owed by accepted requests (durable intake), and their starts.

A request is written in the same transaction as the change that needs the run (a submission, a
new version, a deprecation) and started afterwards by api/run_starter.py, with retries: the
change and the promise of its run are committed together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.database import on_commit
from storage.models import FlowRunRequest, utcnow

QUEUED = "queued"
STARTED = "started"


@dataclass(frozen=True)
class RunSpec:
    """What to start: a deployment with parameters, named and tagged for the Prefect UI."""

    kind: str
    deployment: str
    parameters: dict[str, Any]
    idempotency_key: str
    service_id: str | None = None
    version_id: str | None = None
    run_name: str | None = None
    tags: tuple[str, ...] = ()


def enqueue(session: Session, spec: RunSpec) -> FlowRunRequest:
    """Owe a flow run; due at once."""
    request = FlowRunRequest(
        kind=spec.kind,
        deployment=spec.deployment,
        parameters=spec.parameters,
        idempotency_key=spec.idempotency_key,
        service_id=spec.service_id,
        version_id=spec.version_id,
        run_name=spec.run_name,
        tags=list(spec.tags),
        status=QUEUED,
        attempts=0,
        next_attempt_at=utcnow(),
    )
    session.add(request)
    session.flush()
    on_commit(session, _announce)
    return request


_listeners: list[Callable[[], None]] = []


def when_enqueued(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` after every commit in this process that owes a new run (the starter's wake-up);
    returns a function that unsubscribes it."""
    _listeners.append(callback)
    return lambda: _listeners.remove(callback)


def _announce() -> None:
    for listener in list(_listeners):
        listener()


def next_due(session: Session, *, lock: bool) -> FlowRunRequest | None:
    """The oldest queued request whose next attempt is due. With `lock` (PostgreSQL) the row stays
    locked until the session ends and rows other starters hold are skipped, so several API
    processes share the queue without starting a request twice at the same moment."""
    query = (
        select(FlowRunRequest)
        .where(FlowRunRequest.status == QUEUED, FlowRunRequest.next_attempt_at <= utcnow())
        .order_by(FlowRunRequest.next_attempt_at, FlowRunRequest.created_at)
        .limit(1)
    )
    if lock:
        query = query.with_for_update(skip_locked=True)
    return session.scalars(query).one_or_none()


def get(session: Session, request_id: str) -> FlowRunRequest | None:
    return session.get(FlowRunRequest, request_id)


def mark_started(session: Session, request: FlowRunRequest, flow_run_id: str) -> None:
    request.status = STARTED
    request.flow_run_id = flow_run_id
    request.started_at = utcnow()
    request.attempts += 1
    request.last_error = None
    session.flush()


def mark_attempt_failed(session: Session, request: FlowRunRequest, error: str, retry_at: datetime) -> None:
    request.attempts += 1
    request.last_error = error[:2000]
    request.next_attempt_at = retry_at
    session.flush()


def for_version(session: Session, version_id: str) -> FlowRunRequest | None:
    """The request that owes a version's publish run."""
    query = select(FlowRunRequest).where(FlowRunRequest.version_id == version_id, FlowRunRequest.kind == "publish")
    return session.scalars(query.limit(1)).one_or_none()


def queued_for_service(session: Session, service_id: str, kind: str) -> Sequence[FlowRunRequest]:
    query = select(FlowRunRequest).where(
        FlowRunRequest.service_id == service_id, FlowRunRequest.kind == kind, FlowRunRequest.status == QUEUED
    )
    return session.scalars(query).all()


@dataclass(frozen=True)
class Backlog:
    """How many owed runs wait to be started, and since when the oldest waits."""

    queued: int
    oldest: datetime | None


def backlog(session: Session) -> Backlog:
    row = session.execute(
        select(func.count(), func.min(FlowRunRequest.created_at)).where(FlowRunRequest.status == QUEUED)
    ).one()
    return Backlog(queued=int(row[0]), oldest=row[1])
