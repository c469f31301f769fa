"""Quota alerts: tell a consumer, through its webhook subscription, that it reached 80 % / 100 % of a quota.

The usage writer detects the crossing as it stores the usage rows (exactly once per subscription,
month, metric and threshold: a unique constraint), puts the event for Kafka in the outbox in the
same transaction, and owes a run of this flow for the alert (a flow run request the API's run
starter creates). The run sends the consumer's webhooks with the `notify` task: signed, retried
with backoff, every attempt recorded. The schedule (every 5 minutes, without an alert id) sends
whatever a lost or failed run left behind.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.notify import Audience, NotificationInput, NotificationReport, notify
from tasks.quota_alerts import AlertQuery, SentAlert, find_quota_alerts, mark_sent

EVENT = "quota_threshold_reached"


@flow(name="send-quota-alerts", retries=0, log_prints=False)
def send_quota_alerts(alert_id: str | None = None) -> int:
    """Send the consumer's webhooks of one quota alert (or of every alert not sent yet); returns how many."""
    sent = 0
    for alert in find_quota_alerts(AlertQuery(alert_id=alert_id)):
        # no flow run id in the input: every run derives the same event id, so a rerun (or the safety net
        # running beside the alert's own run) finds the deliveries made before instead of sending anew
        inp = NotificationInput(
            service_id=alert.service_id,
            event_type=EVENT,
            audience=Audience.CONSUMERS,
            consumer_id=alert.consumer_id,
            data=alert.data,
        )
        state = notify(inp, return_state=True)
        if state.is_completed():
            report: NotificationReport = state.result()
            mark_sent(SentAlert(alert_id=alert.alert_id, webhook_event_id=report.event_id))
            sent += 1
        else:
            get_run_logger().warning("quota alert %s not sent yet: %s", alert.alert_id, state.message)
    return sent
