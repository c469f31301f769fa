"""Request and response models of the statement endpoints (amounts are decimal strings, never floats)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from api.consumption_schemas import MAX_REASON, Text
from api.schemas import ApiModel, Page

AMOUNT = r"^-?[0-9]{1,12}(\.[0-9]{1,12})?$"
Amount = Field(description="Decimal amount as a string (never a float).")


class StatementLineOut(ApiModel):
    service_id: str
    service_name: str
    requests: int
    input_tokens: int
    output_tokens: int
    gross: str = Field(description="The calls' costs plus plan_fees, exact.")
    plan_fees: str = Field(
        description="The plan's monthly price for the share of the month the subscription was active, exact."
    )
    fee: str = Amount
    net: str = Amount


class AdjustmentIn(ApiModel):
    amount: str = Field(
        pattern=AMOUNT,
        description="Signed decimal string: positive adds to what is owed (consumer) or earned (provider).",
        examples=["-12.50"],
    )
    reason: Text = Field(min_length=1, max_length=MAX_REASON, description="Why (audited, shown with the statement).")


class AdjustmentOut(ApiModel):
    id: str
    statement_id: str
    amount: str = Amount
    reason: str
    created_at: datetime
    created_by: str


class StatementOut(ApiModel):
    id: str
    party_type: str = Field(description="consumer (what it owes) or provider (what it earns).")
    party_id: str
    period: str = Field(description="The calendar month (UTC), YYYY-MM.")
    currency: str
    period_start: datetime
    period_end: datetime
    requests: int
    input_tokens: int
    output_tokens: int
    gross: str = Field(description="Exact sum of the month's usage costs and plan fees.")
    plan_fees: str = Field(description="The part of gross that is plan prices (pricePerMonth), exact.")
    fee_percent: str = Field(description="The marketplace's cut in percent (providers; 0 for consumers).")
    fee: str = Amount
    net: str = Field(description="gross - fee, exact.")
    total: str = Field(description="net rounded to the cent: the amount of the statement.")
    adjusted_total: str = Field(description="net plus the adjustments, rounded to the cent (once).")
    issued_at: datetime
    flow_run_id: str | None = Field(description="The issue-statements run that issued it.")
    lines: list[StatementLineOut] = Field(description="One per service.")
    adjustments: list[AdjustmentOut] = Field(description="Corrections added after issue, oldest first.")


class StatementPage(Page[StatementOut]):
    pass
