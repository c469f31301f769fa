"""The monitor's two probes of a live service, without Prefect or a database (tasks/health.py
wraps them): its health endpoint, and a minimal call made the way the gateway makes calls.

Without a stored credential the minimal call is not made (the provider may not have set one
yet; the publish-time auth check proved it refuses anonymous calls), and the service is judged
by its health endpoint and traffic. The minimal call is a POST of
`{"input": "ping", "parameters": {"max_tokens": 1}}` to the endpoint URL carrying the provider's
stored credential and the marketplace's signed headers (consumer `marketplace-health-monitor`),
so it fails exactly when a consumer's call would: the provider is down, answers 5xx, or refuses
our credential (401/403). Any other answer, a 400 for the tiny body or a 429 included, shows a
provider that is up and accepts us.

Provider endpoints are untrusted: calls go through core.egress (no private addresses outside
development and tests, no redirects, no proxies or ~/.netrc), with a timeout and a capped read.
The credential exists only in this process's memory for the call: it is never logged, and the
report keeps status codes, timings and error classes, never a header.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, Field

from core import egress
from core.settings import Settings
from core.signing import CONSUMER_HEADER, REQUEST_ID_HEADER, signed_headers

MONITOR_CONSUMER = "marketplace-health-monitor"
MINIMAL_CALL = {"input": "ping", "parameters": {"max_tokens": 1}}
MAX_READ_BYTES = 64 * 1024  # the answers are not used; reading a little lets the connection be reused


class ProbeReport(BaseModel):
    """What the probes saw (safe to persist: no credential, no body)."""

    health_ok: bool
    health_status: int | None = None
    health_ms: float | None = None
    call_ok: bool | None = Field(description="None: not made, the provider has stored no credential yet.")
    call_status: int | None = None
    call_ms: float | None = None
    errors: list[str] = Field(default_factory=list)


def probe(
    endpoint: dict[str, object],
    credential: tuple[str, str] | None,
    signing_secrets: Sequence[str],
    settings: Settings,
) -> ProbeReport:
    """Both probes of one service, one after the other on one connection pool."""
    base = str(endpoint.get("url") or "")
    health_url = _join(base, str(endpoint.get("healthPath") or "/health"))
    errors: list[str] = []
    policy = egress.EgressPolicy.for_endpoints(settings)
    headers = {"User-Agent": "llm-marketplace-health-monitor/1", "Accept-Encoding": "identity"}
    with egress.client(policy, timeout=settings.health.timeout_seconds, headers=headers) as client:
        health_status, health_ms = _call(client, "GET", health_url, {}, None, errors, "health")
        call_status = call_ms = None
        if credential is not None:
            call_headers = _call_headers(base, credential, signing_secrets)
            call_status, call_ms = _call(client, "POST", base, call_headers, MINIMAL_CALL, errors, "call")
    health_ok = health_status is not None and 200 <= health_status < 300
    call_ok = None
    if credential is not None:
        call_ok = call_status is not None and call_status < 500 and call_status not in (401, 403)
    else:
        errors.append("call: skipped, no credential stored (PUT /services/{id}/credential)")
    if health_status is not None and not health_ok:
        errors.append(f"health: answered {health_status}")
    if call_status is not None and not call_ok:
        refused = " (the stored credential was refused)" if call_status in (401, 403) else ""
        errors.append(f"call: answered {call_status}{refused}")
    return ProbeReport(
        health_ok=health_ok,
        health_status=health_status,
        health_ms=health_ms,
        call_ok=call_ok,
        call_status=call_status,
        call_ms=call_ms,
        errors=errors,
    )


def _join(base: str, path: str) -> str:
    """base + path, where path can only change the URL's path (never its host)."""
    try:
        url = httpx.URL(base)
        return str(url.copy_with(path=url.path.rstrip("/") + path))
    except httpx.InvalidURL:
        return base


def _call_headers(base: str, credential: tuple[str, str] | None, secrets: Sequence[str]) -> dict[str, str]:
    """As the gateway calls (gateway/proxy.py upstream_headers): credential, signed marketplace headers."""
    request_id = str(uuid.uuid4())
    headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
    if credential is not None:
        headers[credential[0]] = credential[1]
    if secrets:
        path = urlsplit(base).path or "/"
        headers.update(
            signed_headers(
                secrets,
                method="POST",
                path=path,
                consumer_id=MONITOR_CONSUMER,
                request_id=request_id,
                timestamp=int(time.time()),
            )
        )
    else:
        headers.update({CONSUMER_HEADER: MONITOR_CONSUMER, REQUEST_ID_HEADER: request_id})
    return headers


def _call(
    client: httpx.Client,
    method: str,
    url: str,
    headers: dict[str, str],
    body: object,
    errors: list[str],
    name: str,
) -> tuple[int | None, float | None]:
    """(status, milliseconds to the whole answer), or (None, None) with the error class noted."""
    started = time.perf_counter()
    try:
        with client.stream(method, url, headers=headers, json=body) as response:
            read = 0
            for chunk in response.iter_bytes():
                read += len(chunk)
                if read >= MAX_READ_BYTES:
                    break
            return response.status_code, round((time.perf_counter() - started) * 1000, 1)
    except httpx.HTTPError as exc:
        refused = egress.refusal(exc)
        # the class and, for a refusal, why: never the request (its headers hold the credential)
        errors.append(f"{name}: {'refused: ' + str(refused) if refused else type(exc).__name__}")
        return None, None
