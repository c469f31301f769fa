"""The usage records' lifecycle, as two scheduled deployments (see docs/usage-lifecycle.md).

`maintain-usage-partitions` (daily): the monthly partitions are created months ahead, so a call
never waits for one; months past retention are exported, verified by reading the file back, and
only then dropped. `rollup-usage` (hourly): the daily rollups the usage endpoints read for long
ranges. Both are safe to run twice: what is done is not done again.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from tasks.context import flow_context
from tasks.usage_lifecycle import (
    MonthInput,
    PartitionsInput,
    RetentionInput,
    RollupInput,
    RollupOut,
    create_partitions,
    drop_month,
    export_month,
    find_expired_months,
    roll_up,
    unrolled_rows,
    verify_export,
)


class MaintenanceReport(BaseModel):
    created: list[str]  # partitions created by this run
    archived: dict[str, str]  # month (YYYY-MM) -> file
    archived_rows: int
    waiting: list[str]  # months past retention whose rows are not all rolled up yet


@flow(name="maintain-usage-partitions", retries=0, log_prints=False)
def maintain_usage_partitions(
    now: datetime | None = None, retention_months: int | None = None, archive_dir: str | None = None
) -> MaintenanceReport:
    """Create the coming months' partitions; export, verify and drop the months past retention."""
    settings = flow_context().settings.usage
    moment = now or datetime.now(UTC)
    folder = Path(archive_dir) if archive_dir else settings.archive_dir
    created = create_partitions(PartitionsInput(now=moment, months_ahead=settings.partitions_ahead_months))
    months = find_expired_months(
        RetentionInput(now=moment, retention_months=retention_months or settings.retention_months)
    )
    report = MaintenanceReport(created=created, archived={}, archived_rows=0, waiting=[])
    for month in months:
        _archive(MonthInput(month=month, archive_dir=folder), report)
    _publish(report)
    return report


def _archive(month: MonthInput, report: MaintenanceReport) -> None:
    """One month: only once the rollups hold all of it (they outlive the raw rows), then export, verify, drop."""
    label = f"{month.month:%Y-%m}"
    if unrolled_rows(month) != 0:
        get_run_logger().warning("%s is past retention but not rolled up yet: kept until rollup-usage has run", label)
        report.waiting.append(label)
        return
    export = verify_export(export_month(month))
    report.archived_rows += drop_month(export)
    report.archived[label] = str(export.path)


def _publish(report: MaintenanceReport) -> None:
    log = get_run_logger()
    log.info(
        "partitions created: %s; months archived: %s (%d rows); waiting for rollups: %s",
        ", ".join(report.created) or "none",
        ", ".join(report.archived) or "none",
        report.archived_rows,
        ", ".join(report.waiting) or "none",
    )
    lines = ["# Usage partitions", "", f"- partitions created: {', '.join(report.created) or 'none'}"]
    lines += [f"- {month}: archived to `{path}`, verified, dropped" for month, path in report.archived.items()]
    lines += [f"- {month}: past retention, waiting for rollup-usage" for month in report.waiting]
    create_markdown_artifact(markdown="\n".join(lines), key="usage-partitions", description="maintain-usage-partitions")


@flow(name="rollup-usage", retries=0, log_prints=False)
def rollup_usage(lag_seconds: float | None = None, now: datetime | None = None) -> RollupOut:
    """Recompute the daily usage rollups of every day that received rows since the last run."""
    lag = flow_context().settings.usage.rollup_lag_seconds if lag_seconds is None else lag_seconds
    out = roll_up(RollupInput(lag_seconds=lag, now=now))
    log = get_run_logger()
    log.info(
        "rolled up through %s (before: %s): %d day(s) recomputed %s",
        out.rolled_through.isoformat(),
        out.previous.isoformat() if out.previous else "never",
        len(out.days),
        _days(out.days),
    )
    if out.skipped_days:
        log.warning("rows arrived for archived months, kept as archived: %s", _days(out.skipped_days))
    return out


def _days(days: list[date]) -> str:
    if not days:
        return ""
    return f"({days[0]:%Y-%m-%d})" if len(days) == 1 else f"({days[0]:%Y-%m-%d} .. {days[-1]:%Y-%m-%d})"
