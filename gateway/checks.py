"""The pre-call checks: key, service lifecycle, subscription, limits and quotas (one Redis script)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from email.utils import format_datetime

from gateway.asgi import Scope, header
from gateway.directory import Access, ApiKey, Plan, ServiceRoute, Subscription
from gateway.errors import GatewayError, not_found, unauthorized
from gateway.limits import Ask, Verdict, bucket_keys, month_of, quota_key

QUOTA_NAMES = {-1: "requests_per_month", -2: "tokens_per_month"}


def api_key_of(scope: Scope) -> str:
    """The consumer's key: `Authorization: Bearer <key>` (what OpenAI clients send) or `X-API-Key`."""
    raw = header(scope, b"authorization")
    if raw is not None:
        scheme, _, token = raw.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    raw = header(scope, b"x-api-key")
    if raw:
        return raw.decode("latin-1").strip()
    raise unauthorized("an API key is required (Authorization: Bearer <key>, or X-API-Key)")


def usable(key: ApiKey | None) -> ApiKey:
    if key is None:
        raise unauthorized("the API key is not valid")
    if key.refused:
        raise unauthorized(f"the API key may not be used: {key.refused}")
    if key.expires_at is not None and key.expires_at <= time.time():
        raise unauthorized("the API key has expired")
    return key


def callable_service(route: ServiceRoute | None, wanted: str) -> ServiceRoute:
    """Only active and deprecated services answer; retired 410, suspended 403 with the reason (503 when
    the health monitor suspended it for breaching its SLA)."""
    if route is None or route.status not in ("active", "deprecated", "retired", "suspended"):
        raise not_found(f"service {wanted!r} not found")
    if route.status == "retired":
        raise GatewayError(410, "service_retired", f"service {route.name} {route.version} has been retired")
    if route.status == "suspended":
        reason = route.suspension_reason or "no reason given"
        if route.health_retry_after is not None:  # the health monitor's: temporary, reinstated when it recovers
            raise GatewayError(
                503,
                "service_unavailable",
                f"service {route.name} is suspended while it fails its SLA: {reason}",
                headers={"Retry-After": str(route.health_retry_after)},
            )
        raise GatewayError(403, "service_suspended", f"service {route.name} is suspended: {reason}")
    return route


def subscription_for(key: ApiKey, route: ServiceRoute, access: Access) -> Subscription:
    sub = access.subscription
    if sub is None or not key.may_call(route.id):
        raise GatewayError(
            403, "not_subscribed", f"this key has no subscription to service {route.name} (or may not call it)"
        )
    return sub


def lifecycle_headers(route: ServiceRoute) -> dict[str, str]:
    """RFC 9745 `Deprecation` and RFC 8594 `Sunset`, as the API sets them."""
    if route.status != "deprecated" or route.deprecated_at is None:
        return {}
    headers = {"Deprecation": f"@{int(route.deprecated_at.timestamp())}"}
    if route.sunset_at is not None:
        headers["Sunset"] = format_datetime(route.sunset_at.astimezone(UTC), usegmt=True)
    return headers


def reservation(plan: Plan, route: ServiceRoute, max_tokens: int | None, body_size: int, default: int) -> int:
    """Tokens to reserve: the output ceiling plus an over-estimate of the prompt (4 bytes a token)."""
    if plan.tokens_per_month is None:
        return 0
    ceiling = max_tokens if max_tokens is not None else plan.max_tokens_per_request or route.max_tokens or default
    return ceiling + body_size // 4 + 1


def ask_for(key: ApiKey, sub: Subscription, route: ServiceRoute, occurred_at: float, reserve: int) -> Ask:
    plan = sub.plan
    bucket, key_bucket = bucket_keys(key.consumer_id, route.id, key.id)
    key_rpm = key.requests_per_minute or plan.key_requests_per_minute or 0
    has_quota = plan.requests_per_month is not None or plan.tokens_per_month is not None
    period, _ = month_of(occurred_at)
    return Ask(
        bucket=bucket,
        rpm=plan.requests_per_minute or 0,
        key_bucket=key_bucket if key_rpm else "",
        key_rpm=key_rpm,
        quota=quota_key(key.consumer_id, sub.id, period) if has_quota else "",
        requests_per_month=-1 if plan.requests_per_month is None else plan.requests_per_month,
        tokens_per_month=-1 if plan.tokens_per_month is None else plan.tokens_per_month,
        reserve=reserve,
    )


def rate_headers(verdict: Verdict | None) -> dict[str, str]:
    if verdict is None or verdict.limit < 0 or verdict.verdict < 0:
        return {}
    return {
        "X-RateLimit-Limit": str(verdict.limit),
        "X-RateLimit-Remaining": str(max(0, verdict.remaining)),
        "X-RateLimit-Reset": str(math.ceil(time.time() + verdict.reset_ms / 1000)),
    }


def refusal(verdict: Verdict, occurred_at: float) -> GatewayError:
    """429 for a rate limit (Retry-After: until the next token) or a quota (until the month ends)."""
    if verdict.verdict == 0:
        retry = max(1, math.ceil(verdict.reset_ms / 1000))
        return GatewayError(
            429,
            "rate_limited",
            f"rate limit of {verdict.limit} requests per minute exceeded; retry after {retry} s",
            headers={**rate_headers(verdict), "Retry-After": str(retry)},
        )
    _, ends = month_of(occurred_at)
    which = QUOTA_NAMES[verdict.verdict]
    used = verdict.requests_used if verdict.verdict == -1 else verdict.tokens_used
    resets_at = datetime.fromtimestamp(ends, UTC).isoformat().replace("+00:00", "Z")
    return GatewayError(
        429,
        "quota_exceeded",
        f"monthly quota {which} of {verdict.limit} is used up ({used} used); it resets at {resets_at}",
        headers={"Retry-After": str(max(1, math.ceil(ends - time.time())))},
        extra={"quota": which, "limit": verdict.limit, "used": used, "resetsAt": resets_at},
    )
