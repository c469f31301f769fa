"""Request and response models of the consumption endpoints (consumers, keys, access, credentials)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints

from api.schemas import ApiModel, FlowRunOut, Page

MAX_REASON = 2000
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def _text(value: str) -> str:
    """No store keeps NUL (PostgreSQL refuses it) or an unpaired surrogate (not encodable): 422, not 500."""
    if _NOT_TEXT.search(value):
        raise ValueError("must be Unicode text without NUL characters or unpaired surrogates")
    return value


Text = Annotated[str, AfterValidator(_text)]
ServiceRef = Annotated[str, StringConstraints(min_length=1, max_length=36), AfterValidator(_text)]


class ConsumerIn(ApiModel):
    id: Text = Field(min_length=1, max_length=128, description="The consumer's token subject (`sub`).")
    name: Text = Field(min_length=1, max_length=256)
    email: Text | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")


class ConsumerOut(ApiModel):
    id: str
    name: str
    email: str | None
    status: str = Field(description="active or blocked.")
    blocked_at: datetime | None
    blocked_by: str | None
    blocked_reason: str | None
    created_at: datetime
    created_by: str


class ConsumerPage(Page[ConsumerOut]):
    pass


class BlockIn(ApiModel):
    reason: Text = Field(min_length=3, max_length=MAX_REASON, description="Why (audited, told to the consumer).")


class KeyIn(ApiModel):
    name: Text = Field(min_length=1, max_length=128, description="What the key is for, e.g. 'ci' or 'prod-eu'.")
    expires_at: datetime | None = Field(default=None, description="When the key stops working (ISO 8601, future).")
    service_ids: list[ServiceRef] | None = Field(
        default=None, max_length=100, description="Services it may call; absent: every service subscribed to."
    )
    requests_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000, description="This key's own rate limit, below the plan's."
    )


class KeyOut(ApiModel):
    id: str
    consumer_id: str
    name: str
    hint: str = Field(description="mk_live_<id>_…<last 4>: tells keys apart, cannot be used.")
    status: str = Field(description="active, rotating (replaced; works until expiresAt), expired or revoked.")
    service_ids: list[str] | None
    requests_per_minute: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None
    rotated_from_id: str | None
    replaced_by_id: str | None
    last_used_at: datetime | None


class KeyPage(Page[KeyOut]):
    pass


class KeyCreated(ApiModel):
    key: KeyOut
    secret: str = Field(description="The full API key. Shown this once: only its hash is stored.")


class RotationIn(ApiModel):
    grace_seconds: int = Field(ge=0, description="How long the old key keeps working (bounded by configuration).")


class KeyRotated(KeyCreated):
    previous: KeyOut = Field(description="The old key, working until its expiresAt.")


class PlanOut(ApiModel):
    name: str
    description: str | None
    requests_per_minute: int
    key_requests_per_minute: int | None
    requests_per_month: int | None
    tokens_per_month: int | None
    max_tokens_per_request: int | None
    price_per_month: Decimal
    currency: str | None
    default: bool


class PlansOut(ApiModel):
    service_id: str
    access_approval: bool = Field(description="Whether a subscription waits for approval.")
    approval_reason: str | None
    items: list[PlanOut]


class SubscribeIn(ApiModel):
    service_id: Text = Field(min_length=1, max_length=36)
    plan: Text | None = Field(default=None, max_length=64, description="A plan of the service; absent: its default.")
    message: Text | None = Field(
        default=None, max_length=4000, description="For the reviewer, when approval is needed."
    )


class PlanChangeIn(ApiModel):
    plan: Text = Field(min_length=1, max_length=64)


class AccessRequestOut(ApiModel):
    id: str
    subscription_id: str
    service_id: str
    provider_id: str
    consumer_id: str
    reason: str
    message: str | None
    status: str = Field(description="pending, approved, rejected, expired or cancelled.")
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    reviewer: str | None
    reviewer_role: str | None
    comment: str | None
    flow_run: FlowRunOut | None


class AccessRequestPage(Page[AccessRequestOut]):
    pass


class SubscriptionOut(ApiModel):
    id: str
    consumer_id: str
    service_id: str
    service_name: str
    status: str = Field(description="pending, active, rejected, expired or cancelled.")
    plan_name: str
    plan: dict[str, Any] = Field(description="The plan as published when the subscription started.")
    requests_per_minute: int
    key_requests_per_minute: int | None
    requests_per_month: int | None
    tokens_per_month: int | None
    max_tokens_per_request: int | None
    price_per_month: Decimal
    currency: str | None
    created_at: datetime
    activated_at: datetime | None
    ended_at: datetime | None
    ended_reason: str | None
    access_request: AccessRequestOut | None = None


class SubscriptionPage(Page[SubscriptionOut]):
    pass


class AccessDecisionIn(ApiModel):
    decision: Literal["approve", "reject"]
    comment: Text = Field(default="", max_length=4000, description="Why; shown to the consumer.")


class AccessDecisionAccepted(ApiModel):
    access_request_id: str
    flow_run_id: str
    decision: str
    reviewer: str


class CredentialIn(ApiModel):
    scheme: Literal["bearer", "header"] = Field(
        description="bearer: sent as `Authorization: Bearer <value>`; header: sent as `<headerName>: <value>`."
    )
    header_name: Text | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
    )
    value: Text = Field(
        min_length=1,
        max_length=4096,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Sent as the header's value (no control characters); never returned, never logged.",
    )


class CredentialOut(ApiModel):
    service_id: str
    set: bool
    scheme: str | None = None
    header_name: str | None = None
    key_id: str | None = Field(default=None, description="Id of the encryption key it is stored under.")
    created_at: datetime | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None


class SigningSecretInfo(ApiModel):
    id: int
    created_at: datetime
    created_by: str
    revealed_at: datetime | None
    expires_at: datetime | None = Field(description="null while current; a replaced secret is signed with until then.")


class SigningSecretStatus(ApiModel):
    service_id: str
    items: list[SigningSecretInfo]


class SigningSecretOut(ApiModel):
    service_id: str
    secret: str = Field(description="Shown this once. Verify X-Marketplace-Signature with it (docs/consumption.md).")
    created_at: datetime
    previous_valid_until: datetime | None = None


class SigningRotationIn(ApiModel):
    grace_seconds: int = Field(ge=0, description="How long calls are still signed with the old secret too.")
