"""Discovery's view of use: calls in the last 30 days per service, refreshed on a schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow

from tasks.signals import PushInput, RefreshInput, push_signals, refresh_calls


@flow(name="refresh-service-signals", retries=0, log_prints=False)
def refresh_service_signals(now: datetime | None = None, lookback_hours: float = 2.0) -> int:
    """Recount every service's calls over the 30 days before `now` (an upsert: running it twice
    changes nothing), then bring a search index that copies the figures up to date with what
    moved, including availability and latency written by other flows in the last `lookback_hours`.
    Returns how many services' call counts changed."""
    end = now or datetime.now(UTC)
    changed = refresh_calls(RefreshInput(now=end))
    push_signals(PushInput(service_ids=changed, updated_since=end - timedelta(hours=lookback_hours)))
    return len(changed)
