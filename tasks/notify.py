"""Governance and consumer notifications: signed webhooks, retried with backoff, every attempt recorded.

Notifications never decide a publication. The task turns a receiver that keeps failing into
deliveries recorded as `failed` on its last try and returns normally; it raises only between
tries (that is how Prefect waits and retries it) and on infrastructure errors. Flows call it with
`return_state=True`, so even those come back as a state the flow ignores instead of an exception:

    notify(NotificationInput(service_id=..., event_type="service_published",
                             audience=Audience.GOVERNANCE, flow_run_id=flow_run.get_id()),
           return_state=True)

Don't `.submit()` it without waiting on the future before the flow returns: when a flow ends,
Prefect's thread-pool task runner cancels the submitted tasks' outstanding retries.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import task
from prefect.context import TaskRunContext
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from core.domain import Audience
from core.settings import WebhookSettings
from notifications.webhooks import deliver, envelope
from storage.database import session_scope
from storage.models import WebhookDelivery
from storage.repositories import services, webhooks
from tasks._common import backoff, jitter
from tasks.context import flow_context

__all__ = ["Audience", "NotificationInput", "NotificationReport", "notify"]

# Read when this module is imported, the one setting the tasks still read then: Prefect takes a
# task's retry count when the decorator runs (the delays between tries follow the settings at retry
# time, see tasks/_common.py). The delivery rows count attempts too, so a delivery still stops at
# the max_attempts configured when it runs.
MAX_ATTEMPTS = flow_context().settings.webhooks.max_attempts
# Receivers answer independently; a slow one should not hold back the others for a whole timeout.
PARALLEL_DELIVERIES = 8
EVENT_NAMESPACE = uuid.UUID("6f1c1d5e-8a43-4a0e-9a57-2f1c4b7d9e10")


class NotificationInput(BaseModel):
    """What happened to which service, and who is told."""

    service_id: str
    event_type: str = Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_.]{0,49}$", description="e.g. service_published, approval_requested."
    )
    audience: Audience = Field(description="governance: the configured URLs; consumers: the service's subscribers.")
    data: dict[str, Any] = Field(
        default_factory=dict, description="Added to the service's event data (serviceId, name, version, ...)."
    )
    flow_run_id: str | None = Field(default=None, description="Tells apart the same event of two runs.")
    consumer_id: str | None = Field(
        default=None, description="audience consumers: only this consumer's callbacks for the service (a quota alert)."
    )

    def event_id(self) -> str:
        """Derived from the whole input: a retried (or re-run) task finds the deliveries it made before."""
        fields = self.model_dump(mode="json")
        if fields["consumer_id"] is None:  # left out when unset: the ids of every earlier event stay as they were
            del fields["consumer_id"]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return str(uuid.uuid5(EVENT_NAMESPACE, canonical))


class DeliveryReport(BaseModel):
    delivery_id: str
    url: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None


class NotificationReport(BaseModel):
    event_id: str
    deliveries: list[DeliveryReport] = Field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for d in self.deliveries if d.status == status)


class DeliveriesPending(Exception):
    """Some receivers have not accepted the event yet: Prefect retries the task after a backoff."""


@task(
    name="notify",
    retries=MAX_ATTEMPTS - 1,
    retry_delay_seconds=backoff(MAX_ATTEMPTS - 1),
    retry_jitter_factor=jitter(),
)
def notify(inp: NotificationInput) -> NotificationReport:
    """Send the event to its audience's webhooks; retried while deliveries are pending, failed ones recorded."""
    settings = flow_context().settings.webhooks
    event_id = inp.event_id()
    with session_scope() as session:
        urls = _urls(session, inp, settings)
        if urls:
            _create(session, inp, event_id, urls)
        pending = list(webhooks.for_event(session, event_id, status=webhooks.PENDING))
    _attempt_all(pending, settings)
    with session_scope() as session:
        still_pending = [d.id for d in webhooks.for_event(session, event_id, status=webhooks.PENDING)]
        if still_pending and _last_try():
            webhooks.mark_failed(session, still_pending)
            still_pending = []
    if still_pending:
        raise DeliveriesPending(f"{len(still_pending)} webhook deliveries of event {event_id} still pending")
    return report(event_id)


def _urls(session: Session, inp: NotificationInput, settings: WebhookSettings) -> list[str]:
    if inp.audience is Audience.GOVERNANCE:
        return list(settings.governance_urls)
    return [s.callback_url for s in webhooks.subscriptions_for(session, inp.service_id, inp.consumer_id)]


def _create(session: Session, inp: NotificationInput, event_id: str, urls: Sequence[str]) -> None:
    data = {**services.event_data(services.get(session, inp.service_id)), **inp.data}
    payload = envelope(event_id, inp.event_type, inp.service_id, data)
    event = webhooks.NewEvent(event_id, inp.event_type, inp.service_id, inp.audience.value, payload)
    webhooks.create_deliveries(session, event, urls)


def _attempt_all(pending: Sequence[WebhookDelivery], settings: WebhookSettings) -> None:
    if not pending:
        return
    with ThreadPoolExecutor(max_workers=min(PARALLEL_DELIVERIES, len(pending))) as pool:
        for _ in pool.map(lambda delivery: deliver(delivery, settings), pending):
            pass  # consumed so an error recording an attempt reaches the task (and retries it)


def _last_try() -> bool:
    """True on Prefect's last try of this task run; never when called as a plain function (`.fn`)."""
    context = TaskRunContext.get()
    return context is not None and context.task_run.run_count > context.task.retries


def report(event_id: str) -> NotificationReport:
    """Where every delivery of an event stands."""
    with session_scope() as session:
        rows = webhooks.for_event(session, event_id)
        return NotificationReport(
            event_id=event_id,
            deliveries=[
                DeliveryReport(
                    delivery_id=d.id,
                    url=d.url,
                    status=d.status,
                    attempts=d.attempts,
                    last_status_code=d.last_status_code,
                    last_error=d.last_error,
                )
                for d in rows
            ],
        )
