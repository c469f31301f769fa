"""Quota alerts: which ones still owe the consumer a webhook, and recording that it was sent."""

from __future__ import annotations

from typing import Any

from prefect import task
from pydantic import BaseModel, Field

from storage.database import session_scope
from storage.repositories import quotas
from tasks._common import backoff, jitter


class AlertQuery(BaseModel):
    alert_id: str | None = Field(default=None, description="One alert; none: every alert not sent yet.")


class PendingAlert(BaseModel):
    alert_id: str
    consumer_id: str
    service_id: str
    data: dict[str, Any]


class SentAlert(BaseModel):
    alert_id: str
    webhook_event_id: str


@task(name="find-quota-alerts", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def find_quota_alerts(inp: AlertQuery) -> list[PendingAlert]:
    """The alerts whose consumer has not been told yet (the one asked for, or all)."""
    with session_scope() as session:
        if inp.alert_id is not None:
            one = quotas.get_alert(session, inp.alert_id)
            found = [one] if one is not None and one.notified_at is None else []
        else:
            found = list(quotas.unnotified(session))
        return [
            PendingAlert(alert_id=a.id, consumer_id=a.consumer_id, service_id=a.service_id, data=quotas.alert_data(a))
            for a in found
        ]


@task(name="mark-quota-alert-sent", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def mark_sent(inp: SentAlert) -> None:
    """The consumer was told (every delivery delivered, or failed after its last attempt, and recorded)."""
    with session_scope() as session:
        quotas.mark_notified(session, inp.alert_id, inp.webhook_event_id)
