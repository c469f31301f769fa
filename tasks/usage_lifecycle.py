"""Usage records over time: partitions ahead, months past retention archived, daily rollups."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from prefect import task
from pydantic import BaseModel, Field

from storage.database import session_scope
from storage.repositories import usage, usage_archive, usage_rollups
from tasks._common import backoff, jitter


class PartitionsInput(BaseModel):
    now: datetime = Field(description="The current moment (UTC)")
    months_ahead: int = Field(ge=1, description="Months after the current one to create")


class RetentionInput(BaseModel):
    now: datetime
    retention_months: int = Field(ge=1, description="Whole months kept before the current one")


class MonthInput(BaseModel):
    month: date = Field(description="First day of the month")
    archive_dir: Path


class ExportOut(BaseModel):
    """An export file and what it holds, as counted while writing it."""

    month: date
    part: int
    path: Path
    rows: int
    input_tokens: int
    output_tokens: int
    cost: dict[str, Decimal]
    sha256: str

    @classmethod
    def of(cls, export: usage_archive.Export) -> ExportOut:
        f = export.figures
        return cls(
            month=export.month,
            part=export.part,
            path=export.path,
            rows=f.rows,
            input_tokens=f.input_tokens,
            output_tokens=f.output_tokens,
            cost=f.cost,
            sha256=export.sha256,
        )

    def export(self) -> usage_archive.Export:
        figures = usage_archive.Figures(self.rows, self.input_tokens, self.output_tokens, dict(self.cost))
        return usage_archive.Export(self.month, self.part, self.path, figures, self.sha256)


class RollupInput(BaseModel):
    lag_seconds: float = Field(ge=0, description="Roll up rows stored until this long ago")
    now: datetime | None = Field(default=None, description="Default: the database's clock")


class RollupOut(BaseModel):
    previous: datetime | None
    rolled_through: datetime
    days: list[date]
    skipped_days: list[date]


@task(name="create-usage-partitions", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def create_partitions(inp: PartitionsInput) -> list[str]:
    """Create this month's partition and the next `months_ahead` (PostgreSQL); returns those created."""
    moments = [usage.month_start(inp.now, k) for k in range(inp.months_ahead)]
    with session_scope() as session:
        return usage.ensure_partitions(session, moments)


@task(name="find-expired-usage-months", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def find_expired_months(inp: RetentionInput) -> list[date]:
    """Months of usage records past retention still in the database."""
    with session_scope() as session:
        return usage_archive.expired_months(session, inp.now, inp.retention_months)


@task(name="check-usage-rolled-up", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def unrolled_rows(inp: MonthInput) -> int | None:
    """Rows of the month the rollups do not hold yet (None: no rollup ran yet); archiving waits for 0."""
    with session_scope() as session:
        return usage_archive.unrolled_rows(session, inp.month)


@task(name="export-usage-month", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def export_month(inp: MonthInput) -> ExportOut:
    """Write the month's rows to a gzip-compressed CSV file (fsynced) and count what it wrote."""
    with session_scope() as session:
        return ExportOut.of(usage_archive.export_month(session, inp.month, inp.archive_dir))


@task(name="verify-usage-export", retries=1, retry_delay_seconds=backoff(1), retry_jitter_factor=jitter())
def verify_export(inp: ExportOut) -> ExportOut:
    """Re-read the file and count the month in the database: rows, tokens and cost per currency must agree."""
    with session_scope() as session:
        usage_archive.verify(session, inp.export())
    return inp


@task(name="drop-usage-month", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def drop_month(inp: ExportOut) -> int:
    """Record the archive and remove the month (partition detached and dropped; SQLite: rows deleted)."""
    with session_scope() as session:
        usage_archive.remove_month(session, inp.export())
    return inp.rows


@task(name="roll-up-usage", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def roll_up(inp: RollupInput) -> RollupOut:
    """Recompute the daily rollups of every day that received rows since the watermark, and move it."""
    with session_scope() as session:
        run = usage_rollups.roll_up(session, timedelta(seconds=inp.lag_seconds), inp.now)
        return RollupOut(
            previous=run.previous, rolled_through=run.rolled_through, days=run.days, skipped_days=run.skipped_days
        )
