"""Retention of usage records: a month past retention goes to a compressed CSV file, is verified
against the database by re-reading the file, and only then leaves the database (PostgreSQL: its
partition is detached and dropped; SQLite: its rows are deleted)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from storage.models import UsageArchive, UsageRecord, utcnow
from storage.repositories.usage import COLUMNS, month_start, partition_name
from storage.repositories.usage_rollups import rolled_through

EXPORTED = (*COLUMNS, "recorded_at")
_PARTITION = r"^usage_records_\d{4}_\d{2}$"


class ArchiveMismatchError(RuntimeError):
    """The file or the database does not hold what the export counted: nothing is removed."""


@dataclass
class Figures:
    """What a month holds: compared between the database, the export and the file read back."""

    rows: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: dict[str, Decimal] = field(default_factory=dict)

    def add(self, input_tokens: int, output_tokens: int, currency: str, cost: Decimal) -> None:
        self.rows += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost[currency] = self.cost.get(currency, Decimal(0)) + cost


@dataclass(frozen=True)
class Export:
    month: date
    part: int
    path: Path
    figures: Figures
    sha256: str


def partitions(session: Session) -> list[date]:
    """PostgreSQL: the months that have a partition, oldest first."""
    names = session.scalars(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'usage_records'::regclass AND c.relname ~ :pattern"
        ),
        {"pattern": _PARTITION},
    ).all()
    return sorted(date(int(n[14:18]), int(n[19:21]), 1) for n in names)


def expired_months(session: Session, now: datetime, retention_months: int) -> list[date]:
    """Months that ended more than `retention_months` whole months before now's month began."""
    cutoff = month_start(now, -retention_months).date()
    if session.get_bind().dialect.name == "postgresql":
        return [m for m in partitions(session) if m < cutoff]
    oldest = session.scalar(select(func.min(UsageRecord.occurred_at)))
    months: list[date] = []
    month = None if oldest is None else month_start(oldest).date()
    while month is not None and month < cutoff:
        months.append(month)
        month = month_start(_start(month), 1).date()
    return months


def _start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def _range(month: date) -> list[Any]:
    return [UsageRecord.occurred_at >= _start(month), UsageRecord.occurred_at < month_start(_start(month), 1)]


def unrolled_rows(session: Session, month: date) -> int | None:
    """Rows of the month not yet in the rollups (None: no rollup ever ran); a month is archived only at 0."""
    watermark = rolled_through(session)
    if watermark is None:
        return None
    stmt = select(func.count()).select_from(UsageRecord).where(*_range(month), UsageRecord.recorded_at > watermark)
    return int(session.scalar(stmt) or 0)


def database_figures(session: Session, month: date) -> Figures:
    """The month's rows counted and summed by the database itself."""
    r = UsageRecord
    figures = Figures()
    if session.get_bind().dialect.name != "postgresql":  # SQLite keeps amounts as text: summed exactly here
        for row in session.execute(select(r.input_tokens, r.output_tokens, r.currency, r.cost).where(*_range(month))):
            figures.add(*row)
        return figures
    stmt = select(r.currency, func.count(), func.sum(r.input_tokens), func.sum(r.output_tokens), func.sum(r.cost))
    for currency, rows, tokens_in, tokens_out, cost in session.execute(stmt.where(*_range(month)).group_by(r.currency)):
        figures.rows += int(rows)
        figures.input_tokens += int(tokens_in)
        figures.output_tokens += int(tokens_out)
        figures.cost[currency] = Decimal(str(cost))
    return figures


def next_part(session: Session, month: date) -> int:
    """0 for a month never archived; more when rows arrived for it after it was (see the docs)."""
    last = session.scalar(select(func.max(UsageArchive.part)).where(UsageArchive.month == month))
    return 0 if last is None else last + 1


def file_for(folder: Path, month: date, part: int) -> Path:
    suffix = "" if part == 0 else f".part{part}"
    return folder / f"usage_records_{month:%Y_%m}{suffix}.csv.gz"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _rows(session: Session, month: date) -> Iterator[Any]:
    table: Any = UsageRecord.__table__
    stmt = select(*(table.c[c] for c in EXPORTED)).where(*_range(month))
    yield from session.execute(stmt.execution_options(yield_per=5000))


def export_month(session: Session, month: date, folder: Path) -> Export:
    """Write the month's rows to `folder` (a temporary name, fsync, then the final name)."""
    part = next_part(session, month)
    path = file_for(folder, month, part)
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    figures = Figures()
    at = {c: i for i, c in enumerate(EXPORTED)}
    with open(partial, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed:
            out = io.TextIOWrapper(packed, encoding="utf-8", newline="")
            writer = csv.writer(out)
            writer.writerow(EXPORTED)
            for row in _rows(session, month):
                writer.writerow([_cell(v) for v in row])
                figures.add(row[at["input_tokens"]], row[at["output_tokens"]], row[at["currency"]], row[at["cost"]])
            out.flush()
            out.detach()  # closing the gzip stream (its trailer) is the with block's
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, path)
    _sync_folder(folder)
    return Export(month, part, path, figures, _sha256(path))


def _sync_folder(folder: Path) -> None:
    """The rename itself survives a crash only once the folder is synced."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_back(path: Path) -> Figures:
    """The figures of an export file, from the file alone."""
    figures = Figures()
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != EXPORTED:
            raise ArchiveMismatchError(f"{path}: unexpected columns {reader.fieldnames}")
        for row in reader:
            figures.add(int(row["input_tokens"]), int(row["output_tokens"]), row["currency"], Decimal(row["cost"]))
    return figures


def verify(session: Session, export: Export) -> None:
    """The file read back, the export's own count and the database agree, to the last row and cent."""
    in_file, in_database = read_back(export.path), database_figures(session, export.month)
    for what, figures in (("file", in_file), ("database", in_database)):
        if figures != export.figures:
            raise ArchiveMismatchError(
                f"{export.path.name}: the {what} holds {figures}, the export wrote {export.figures}"
            )


def remove_month(session: Session, export: Export) -> None:
    """Record the archive and remove the month's rows, refusing if any row came in since the export."""
    if session.get_bind().dialect.name == "postgresql":
        _drop_partition(session, export)
    else:
        # SQLite: every transaction here holds the write lock (storage.database), so no row comes in
        # between this count and the delete
        _same_rows(export, int(session.scalar(select(func.count()).where(*_range(export.month))) or 0))
        session.execute(delete(UsageRecord).where(*_range(export.month)))
    session.add(
        UsageArchive(
            month=export.month,
            part=export.part,
            path=str(export.path),
            rows=export.figures.rows,
            input_tokens=export.figures.input_tokens,
            output_tokens=export.figures.output_tokens,
            cost={c: format(a, "f") for c, a in export.figures.cost.items()},
            sha256=export.sha256,
            archived_at=utcnow(),
        )
    )
    session.flush()


def _drop_partition(session: Session, export: Export) -> None:
    name = partition_name(_start(export.month))
    # the parent's lock keeps new rows out of the month until it is gone (writers lock the parent first,
    # so no deadlock); give up quickly rather than queue every usage read behind a long one
    session.execute(text("SET LOCAL lock_timeout = '5s'"))
    session.execute(text("LOCK TABLE usage_records IN ACCESS EXCLUSIVE MODE"))
    _same_rows(export, int(session.scalar(text(f"SELECT count(*) FROM {name}")) or 0))  # noqa: S608
    session.execute(text(f"ALTER TABLE usage_records DETACH PARTITION {name}"))
    session.execute(text(f"DROP TABLE {name}"))


def _same_rows(export: Export, rows: int) -> None:
    if rows != export.figures.rows:
        raise ArchiveMismatchError(
            f"{export.path.name}: the database now holds {rows} rows of {export.month:%Y-%m}, the export "
            f"{export.figures.rows}; kept (the next run exports it again)"
        )


def archives(session: Session) -> Iterable[UsageArchive]:
    return session.scalars(select(UsageArchive).order_by(UsageArchive.month, UsageArchive.part)).all()
