"""One call through the gateway: checks, the provider call (whole or streamed), the usage hand-off.

The answer's last byte is sent only after the call's usage record has been handed off durably
(gateway/handoff.py), so every call that got a complete answer has its record.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from opentelemetry.trace import SpanKind

from core import telemetry
from core.logging import valid_request_id
from core.settings import GatewaySettings
from core.signing import signed_headers
from gateway import checks, metrics
from gateway.asgi import Receive, Scope, Send, encode_headers, header, read_body, send_whole
from gateway.directory import Access, AccessDirectory, ApiKey, ServiceRoute, Subscription
from gateway.errors import GatewayError
from gateway.handoff import Handoff, Settlement
from gateway.limits import Limits, Verdict
from gateway.openai_compat import SseScanner
from gateway.upstream import Upstream, upstream_failure
from gateway.usage import UsageRecord, usage_of

PASSED_RESPONSE_HEADERS = ("content-type", "content-encoding", "cache-control")


@dataclass
class Gateway:
    """What every call uses, built once per process."""

    settings: GatewaySettings
    directory: AccessDirectory
    limits: Limits
    upstream: Upstream
    handoff: Handoff


@dataclass
class Call:
    """The state of one call as it goes through the checks and the provider.

    `request_id` is the gateway's own id of the call: its usage record's identity and the nonce of
    its signature, so always new. A caller's X-Request-ID is `caller_request_id`: echoed in the
    answer's X-Request-ID and passed to the provider as theirs, with the call's own id beside it."""

    route_name: str
    caller_request_id: str | None = None
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    key: ApiKey | None = None
    service: ServiceRoute | None = None
    subscription: Subscription | None = None
    access: Access | None = None
    verdict: Verdict | None = None
    reserved: int = 0
    quota: str = ""
    ttfb_ms: float | None = None
    stream: bool = False
    status: int = 500  # what the consumer got (set when the answer starts)
    error: str | None = None  # our error code, when the call failed

    @property
    def correlation_id(self) -> str:
        """The id the caller knows the call by: its own X-Request-ID, else the call's."""
        return self.caller_request_id or self.request_id

    def headers(self) -> dict[str, str]:
        """What every answer to this call carries: its ids, the rate limit and lifecycle headers."""
        out = {"X-Request-ID": self.correlation_id, **checks.rate_headers(self.verdict)}
        if self.caller_request_id is not None:
            out["X-Marketplace-Request-Id"] = self.request_id  # the usage record's id
        if self.service is not None:
            out.update(checks.lifecycle_headers(self.service))
        return out


async def authorize(gw: Gateway, call: Call, body_size: int, max_tokens: int | None) -> None:
    """Key, service, subscription, then limits and quota in one script; raises the refusal."""
    assert call.service is not None
    assert call.key is not None
    call.access = await gw.directory.access(call.key, call.service)
    call.subscription = sub = checks.subscription_for(call.key, call.service, call.access)
    reserve = checks.reservation(sub.plan, call.service, max_tokens, body_size, gw.settings.default_max_tokens)
    ask = checks.ask_for(call.key, sub, call.service, call.occurred_at, reserve)
    call.verdict = verdict = await gw.limits.check(ask)
    if not verdict.allowed:
        if verdict.verdict in checks.QUOTA_NAMES:
            metrics.quota_rejected(checks.QUOTA_NAMES[verdict.verdict])
        raise checks.refusal(verdict, call.occurred_at)
    call.reserved, call.quota = reserve, ask.quota


async def authenticate(gw: Gateway, call: Call, scope: Scope) -> ApiKey:
    call.key = checks.usable(await gw.directory.key(checks.api_key_of(scope)))
    return call.key


async def forward(gw: Gateway, call: Call, url: str, body: bytes, send: Send, sse: SseScanner | None) -> None:
    """Call the provider and answer the consumer with what it says."""
    assert call.service is not None
    assert call.key is not None
    headers = upstream_headers(call, url)
    breaker = gw.upstream.breaker(call.service.provider_id)
    breaker.before_call(call.service.provider_id)
    try:
        if telemetry.STATE.enabled:
            response = await _traced_send(gw, call, url, body, headers)
        else:
            response = await gw.upstream.send(url, body, headers)
    except GatewayError:
        breaker.record(False)
        raise
    call.ttfb_ms = (time.perf_counter() - call.started) * 1000
    try:
        breaker.record(response.status < 500)
        if response.status >= 500:
            raise GatewayError(
                502,
                "upstream_error",
                f"the provider answered {response.status}",
                extra={"upstreamStatus": response.status},
            )
        if response.content_type == "text/event-stream":
            await _relay_stream(gw, call, response, send, sse or SseScanner(drop_usage_event=False))
        else:
            await _relay_whole(gw, call, response, send)
    finally:
        response.release()


async def _traced_send(
    gw: Gateway, call: Call, url: str, body: bytes, headers: dict[str, str]
) -> aiohttp.ClientResponse:
    """The provider call as a client span (to its status line); the provider gets its traceparent."""
    assert call.service is not None
    attributes = {"url.full": url, "service.id": call.service.id, "request_id": call.correlation_id}
    with telemetry.tracer().start_as_current_span("provider call", kind=SpanKind.CLIENT, attributes=attributes) as span:
        telemetry.inject(headers)
        response = await gw.upstream.send(url, body, headers)
        span.set_attribute("http.response.status_code", response.status)
        return response


def caller_request_id(scope: Scope) -> str | None:
    """The caller's X-Request-ID when it is a sane id (core/logging.valid_request_id), else None."""
    raw = header(scope, b"x-request-id")
    if raw is None:
        return None
    candidate = raw.decode("latin-1")
    return candidate if valid_request_id(candidate) else None


def upstream_headers(call: Call, url: str) -> dict[str, str]:
    """The provider's credential and the signed marketplace headers; never the consumer's key."""
    assert call.key is not None
    assert call.access is not None
    headers = {"Content-Type": "application/json", "X-Request-ID": call.correlation_id}
    if call.access.credential is not None:
        headers[call.access.credential[0]] = call.access.credential[1]
    if call.access.signing_secrets:
        path = urlsplit(url).path or "/"
        headers.update(
            signed_headers(
                call.access.signing_secrets,
                method="POST",
                path=path,
                consumer_id=call.key.consumer_id,
                request_id=call.request_id,
                timestamp=int(time.time()),
            )
        )
    else:  # the provider has not fetched a signing secret yet: who, unsigned
        headers.update({"X-Marketplace-Consumer": call.key.consumer_id, "X-Marketplace-Request-Id": call.request_id})
    return headers


def _answer_headers(call: Call, response: aiohttp.ClientResponse) -> dict[str, str]:
    passed = {k: v for k in PASSED_RESPONSE_HEADERS if (v := response.headers.get(k)) is not None}
    return {**passed, **call.headers()}


async def _relay_whole(gw: Gateway, call: Call, response: aiohttp.ClientResponse, send: Send) -> None:
    try:
        body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise upstream_failure(exc) from exc
    usage = None
    if 200 <= response.status < 300 and b'"usage"' in body:
        try:
            usage = usage_of(orjson.loads(body))
        except orjson.JSONDecodeError:
            usage = None
    await record(gw, call, response.status, usage)
    headers = _answer_headers(call, response)
    content_type = headers.pop("content-type", "application/json").encode("latin-1")
    await send_whole(send, response.status, body, headers, content_type)


async def _relay_stream(gw: Gateway, call: Call, response: aiohttp.ClientResponse, send: Send, sse: SseScanner) -> None:
    """Pass every complete event on as it arrives; the closing empty chunk waits for the hand-off."""
    call.stream = True
    headers = [(b"content-length", b""), *encode_headers(_answer_headers(call, response))]
    start = {"type": "http.response.start", "status": response.status, "headers": headers[1:]}
    await send(start)
    status, error = response.status, None
    try:
        async for chunk in response.content.iter_any():
            out = sse.feed(chunk)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
        tail = sse.rest()
    except (aiohttp.ClientError, TimeoutError) as exc:
        failure = upstream_failure(exc)
        status, error = failure.status, failure.code
        tail = b"event: error\ndata: " + failure.body() + b"\n\n"
    await record(gw, call, status, sse.usage, error=error)
    await send({"type": "http.response.body", "body": tail, "more_body": False})


async def record(gw: Gateway, call: Call, status: int, usage: tuple[int, int] | None, error: str | None = None) -> None:
    """Hand the call's usage record off and settle its reservation (given back unless it succeeded)."""
    call.status, call.error = status, error
    service, key = call.service, call.key
    if service is None or key is None:
        return
    ok = 200 <= status < 300 and error is None
    tokens = usage if (ok and usage) else (0, 0)
    settlement = None
    if call.quota:
        delta = (sum(tokens) - call.reserved) if ok else -call.reserved
        settlement = Settlement(call.quota, 0 if ok else -1, delta, call.verdict is not None and call.verdict.shared)
    cost = service.rates.cost(*tokens) if ok else Decimal(0)
    await gw.handoff.submit(_usage_record(call, service, key, status, tokens, cost, error), settlement)


def _usage_record(
    call: Call,
    service: ServiceRoute,
    key: ApiKey,
    status: int,
    tokens: tuple[int, int],
    cost: Decimal,
    error: str | None,
) -> UsageRecord:
    return UsageRecord(
        request_id=call.request_id,
        occurred_at=call.occurred_at,
        consumer_id=key.consumer_id,
        key_id=key.id,
        service_id=service.id,
        service_version=service.version,
        subscription_id=call.subscription.id if call.subscription else None,
        route=call.route_name,
        status=status,
        latency_ms=round((time.perf_counter() - call.started) * 1000, 3),
        ttfb_ms=None if call.ttfb_ms is None else round(call.ttfb_ms, 3),
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost=cost,
        currency=service.rates.currency,
        stream=call.stream,
        error=error,
    )


async def fail(gw: Gateway, call: Call, send: Send, exc: GatewayError) -> None:
    """Answer with the error body; a call whose key and service were known gets its usage record."""
    await record(gw, call, exc.status, None, error=exc.code)
    await send_whole(send, exc.status, exc.body(), {**call.headers(), **exc.headers})


async def read_request(gw: Gateway, receive: Receive) -> bytes:
    return await read_body(receive, gw.settings.max_body_bytes)


def json_answer(data: Any) -> bytes:
    return orjson.dumps(data)
