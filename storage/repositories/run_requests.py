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

from storage.bulk import insert_new
from storage.database import mark_services_changed, on_commit
from storage.models import FlowRunRequest, new_id, utcnow

QUEUED = "queued"
STARTED = "started"
REQUEST_TAG_PREFIX = "request:"  # core/logging.py reads it back into the run's log lines


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
    request_id: str | None = None  # the X-Request-ID of the request that owes the run
    traceparent: str | None = None  # that request's W3C trace context (tracing on), continued by the run

    def run_tags(self) -> list[str]:
        """The tags the run is created with: its own, and `request:<id>` to find it from a log line."""
        return [*self.tags, f"{REQUEST_TAG_PREFIX}{self.request_id}"] if self.request_id else list(self.tags)


def enqueue(session: Session, spec: RunSpec) -> FlowRunRequest:
    """Owe a flow run in the caller's transaction; due at once, and announced once that commits."""
    owed = request(spec)
    insert_new(session, owed)  # on the intake's hot path (storage/bulk.py)
    if spec.service_id is not None:  # a queued run shows in the service's status report
        mark_services_changed(session, [spec.service_id])
    on_commit(session, announce)
    return owed


def request(spec: RunSpec) -> FlowRunRequest:
    """The row of an owed run, not written yet (the intake writer writes it with its submission)."""
    return FlowRunRequest(
        id=new_id(),
        kind=spec.kind,
        deployment=spec.deployment,
        parameters=spec.parameters,
        idempotency_key=spec.idempotency_key,
        service_id=spec.service_id,
        version_id=spec.version_id,
        run_name=spec.run_name,
        tags=list(spec.tags),
        request_id=spec.request_id,
        traceparent=spec.traceparent,
        status=QUEUED,
        attempts=0,
        next_attempt_at=utcnow(),
    )


_listeners: list[Callable[[], None]] = []


def when_enqueued(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` after every commit in this process that owes a new run (the starter's wake-up);
    returns a function that unsubscribes it."""
    _listeners.append(callback)
    return lambda: _listeners.remove(callback)


def announce() -> None:
    """Tell this process's listeners (the run starter) that runs are owed: after a commit that added some."""
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


def started_elsewhere(session: Session, version_id: str, flow_run_id: str) -> None:
    """The version's publish run reported itself running before a starter recorded it: done. A request
    a starter holds locked right now is left to it (it records the same run)."""
    query = select(FlowRunRequest).where(FlowRunRequest.version_id == version_id, FlowRunRequest.kind == "publish")
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    request = session.scalars(query.limit(1)).one_or_none()
    if request is not None and request.status == QUEUED:
        request.status, request.flow_run_id, request.started_at = STARTED, flow_run_id, utcnow()
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
