"""Tables of provider health: one row per check of a service, and where each service stands.

Kept beside `storage/models.py` (same declarative base) because only the health monitor, the
gateway's routing read and the health endpoint use them. Migration:
`storage/migrations/versions/0010_service_health.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, utcnow


class ServiceHealth(Base):
    """A service's health verdict so far: the runs of breaching and healthy checks that decide
    an automatic suspension or reinstatement (storage/repositories/health.py)."""

    __tablename__ = "service_health"

    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # healthy | breaching | suspended | recovering
    consecutive_breaches: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_healthy: Mapped[int] = mapped_column(Integer, default=0)
    last_slot: Mapped[datetime | None] = mapped_column()  # the interval of the latest check
    last_check_id: Mapped[int | None] = mapped_column(Integer)
    suspended_at: Mapped[datetime | None] = mapped_column()  # by the monitor (None when it reinstated)
    reinstated_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ServiceHealthCheck(Base):
    """One check of one service: the probes, the gateway's traffic of the window, the verdict."""

    __tablename__ = "service_health_checks"
    __table_args__ = (
        # one check per service and interval: a rerun of the flow finds it and counts nothing twice
        Index("uq_service_health_checks_slot", "service_id", "slot", unique=True),
        Index("ix_service_health_checks_checked", "service_id", "checked_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"))
    slot: Mapped[datetime] = mapped_column()  # start of the interval this check stands for
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    service_status: Mapped[str] = mapped_column(String(32))  # before the check's verdict
    health_ok: Mapped[bool] = mapped_column(Boolean)
    health_status: Mapped[int | None] = mapped_column(Integer)
    health_ms: Mapped[float | None] = mapped_column(Float)
    call_ok: Mapped[bool | None] = mapped_column(Boolean)  # None: not made (no credential stored)
    call_status: Mapped[int | None] = mapped_column(Integer)
    call_ms: Mapped[float | None] = mapped_column(Float)
    probe_errors: Mapped[list[Any]] = mapped_column(default=list)  # why a probe failed (never a secret)
    requests: Mapped[int] = mapped_column(Integer, default=0)  # gateway calls that reached the provider
    errors: Mapped[int] = mapped_column(Integer, default=0)  # of which failed (5xx, broke off, timed out)
    successes: Mapped[int] = mapped_column(Integer)  # probes and calls that succeeded
    attempts: Mapped[int] = mapped_column(Integer)  # probes and calls in all
    availability: Mapped[float] = mapped_column(Float)  # percent: successes / attempts
    latency_p95_ms: Mapped[float | None] = mapped_column(Float)
    sla_availability: Mapped[float | None] = mapped_column(Float)
    sla_latency_ms: Mapped[int | None] = mapped_column(Integer)
    breached: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    action: Mapped[str | None] = mapped_column(String(16))  # suspended | reinstated
    note: Mapped[str | None] = mapped_column(Text)
