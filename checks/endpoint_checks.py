"""Phase 7 checks of a provider's live endpoint: health, auth, security, latency (conformance is
in checks/endpoint_conformance.py, on the same plumbing).

Each check is a pure function `(spec, settings) -> PhaseOutcome` with no database and no Prefect,
so it can be unit-tested against a local fake provider. A failed check returns a FAILED outcome;
it never raises. The endpoint is untrusted, so every call is made without credentials, without
following redirects, with verified TLS, with a total time limit and with a cap on the body read.

Server-side request forgery: the calls go through core.egress, which resolves the endpoint's host
once per connection, refuses loopback, private, link-local and other non-public addresses, and
connects to the address it checked (so DNS rebinding cannot swap it). Loopback and private
addresses are allowed only with endpoint_tests.allow_insecure_endpoints outside production. A
redirect is never followed: the check reports the 3xx and its Location.
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from core import egress
from core.domain import Issue, Outcome, Phase, PhaseOutcome, Severity
from core.settings import Settings

MAX_CONFORMANCE_OPERATIONS = 20
MAX_BODY_BYTES = 2 * 1024 * 1024
TRANSIENT_CODES = frozenset(
    {"endpoint-unreachable", "endpoint-timeout", "endpoint-server-error", "latency-sla-exceeded"}
)
"""Issue codes worth a retry: the same call may well succeed a few seconds later."""
REFUSED_CODE = "local-endpoint-refused"
"""The endpoint's host is, or resolves to, an address the endpoint tests must not call (never retried)."""

_URL = "/endpoint/url"
_HEALTH_PATH = "/endpoint/healthPath"
_MODERN_TLS = frozenset({"TLSv1.2", "TLSv1.3"})


# --- HTTP plumbing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status_code: int
    headers: httpx.Headers
    body: bytes
    truncated: bool
    elapsed_ms: float
    tls_version: str | None


class _Probe:
    """An httpx client configured for calling an untrusted endpoint."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.endpoint_tests.timeout_seconds
        # egress.client: vetted connections (see the module docstring), no redirects, and
        # trust_env=False: no proxy variables and, above all, no ~/.netrc credentials sent to a
        # provider-chosen host. The CA bundle still honours SSL_CERT_FILE/SSL_CERT_DIR.
        self._client = egress.client(
            egress.EgressPolicy.for_endpoints(settings),
            timeout=self.timeout,
            headers={"User-Agent": "llm-marketplace-endpoint-tests/1", "Accept-Encoding": "identity"},
        )

    def __enter__(self) -> _Probe:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.close()

    def fetch(self, method: str, url: str, **kwargs: Any) -> _Reply:
        """One call; raises httpx.HTTPError (TimeoutException past the total time limit)."""
        started = time.perf_counter()
        with self._client.stream(method, url, **kwargs) as response:
            tls_version = _tls_version(response)
            body, truncated = _read_capped(response.iter_bytes(), started + self.timeout, response.request)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return _Reply(response.status_code, response.headers, body, truncated, elapsed_ms, tls_version)


def _read_capped(chunks: Iterator[bytes], deadline: float, request: httpx.Request) -> tuple[bytes, bool]:
    # httpx's timeout is per socket operation; a provider trickling bytes would never trip it.
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        if time.perf_counter() > deadline:
            raise httpx.ReadTimeout("response exceeded the total time limit", request=request)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"".join(parts), True
        parts.append(chunk)
    if time.perf_counter() > deadline:
        raise httpx.ReadTimeout("response exceeded the total time limit", request=request)
    return b"".join(parts), False


def _tls_version(response: httpx.Response) -> str | None:
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    version: str | None = ssl_object.version() if ssl_object is not None else None
    return version


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind an httpx error: httpx wraps httpcore, which wraps the ssl module."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        linked = (current.__cause__, current.__context__, *current.args)
        pending.extend(e for e in linked if isinstance(e, BaseException))
    return None


def _transport_issue(exc: httpx.HTTPError, url: str, pointer: str = _URL) -> Issue:
    refused = egress.refusal(exc)
    if refused is not None:
        return _egress_issue(f"endpoint host {refused}")
    tls_error = _ssl_cause(exc)
    if isinstance(tls_error, ssl.SSLCertVerificationError):
        return Issue(
            code="tls-certificate-invalid",
            message=f"TLS certificate of {url} is not trusted: {tls_error.verify_message or tls_error}",
            pointer=_URL,
            severity=Severity.CRITICAL,
            remediation="Serve a certificate chain issued by a public CA that matches the host name.",
        )
    if tls_error is not None:
        return Issue(
            code="tls-handshake-failed",
            message=f"TLS handshake with {url} failed: {tls_error}",
            pointer=_URL,
            severity=Severity.CRITICAL,
            remediation="Support TLS 1.2 or newer with current cipher suites.",
        )
    if isinstance(exc, httpx.TimeoutException):
        return Issue(code="endpoint-timeout", message=f"{url} did not answer in time: {exc}", pointer=pointer)
    return Issue(code="endpoint-unreachable", message=f"{url} is unreachable: {exc}", pointer=pointer)


# --- spec helpers ------------------------------------------------------------------------------


def _section(spec: dict[str, Any], name: str) -> dict[str, Any]:
    # Earlier phases validated the spec's shape; still, a probe must not crash on a bad one.
    section = spec.get(name)
    return section if isinstance(section, dict) else {}


def _endpoint(spec: dict[str, Any]) -> dict[str, Any]:
    return _section(spec, "endpoint")


def _join(base: str, path: str) -> str | None:
    """base + path, where path can only change the URL's path, never its host; None if invalid."""
    try:
        url = httpx.URL(base)
        return str(url.copy_with(path=url.path.rstrip("/") + path))
    except httpx.InvalidURL:  # "?", "#" or control characters in the path
        return None


def _health_url(spec: dict[str, Any]) -> str:
    """Only called once _target_issue has accepted the URL and healthPath."""
    endpoint = _endpoint(spec)
    return str(_join(str(endpoint.get("url")), str(endpoint.get("healthPath") or "/health")))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _egress_issue(message: str) -> Issue:
    # Not in TRANSIENT_CODES: the endpoint tests must not retry their way into an internal network.
    return Issue(
        code=REFUSED_CODE,
        message=f"{message}; the endpoint tests call only publicly routable addresses",
        pointer=_URL,
        remediation="Publish an endpoint whose host name resolves only to public IP addresses.",
    )


def _target_issue(spec: dict[str, Any], settings: Settings) -> Issue | None:
    """Refuse URLs the checks must not call, even if an earlier phase let them through."""
    raw = _endpoint(spec).get("url")
    try:
        url = httpx.URL(raw) if isinstance(raw, str) else None
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        return Issue(code="endpoint-url-invalid", message=f"{raw!r} is not an http(s) URL", pointer=_URL)
    if url.userinfo:
        # httpx would turn user:password@ into Basic auth, which breaks the "no credentials" rule.
        return Issue(code="endpoint-url-invalid", message="endpoint URL must not embed credentials", pointer=_URL)
    if _join(str(url), str(_endpoint(spec).get("healthPath") or "/health")) is None:
        return Issue(code="endpoint-url-invalid", message="healthPath is not a valid URL path", pointer=_HEALTH_PATH)
    # The flag is ignored in production even if a Settings object was built around its validator.
    if egress.EgressPolicy.for_endpoints(settings).allow_private:
        return None
    if url.scheme == "http":
        return Issue(code="insecure-endpoint-refused", message="plain http endpoints are refused", pointer=_URL)
    # Literal addresses and localhost names, refused before any call; names that resolve to such
    # an address are refused by the egress client when it connects.
    problem = egress.host_problem(url.host)
    if problem is not None:
        return _egress_issue(f"endpoint host {url.host!r} {problem}")
    return None


# --- outcomes ----------------------------------------------------------------------------------


def _outcome(check: str, issues: list[Issue], **evidence: Any) -> PhaseOutcome:
    return PhaseOutcome.from_issues(Phase.ENDPOINT_TESTS, issues, check=check, **evidence)


def _skipped(check: str, note: str, **evidence: Any) -> PhaseOutcome:
    return PhaseOutcome(
        phase=Phase.ENDPOINT_TESTS, check=check, outcome=Outcome.SKIPPED, evidence={"note": note, **evidence}
    )


def _refused(check: str, spec: dict[str, Any], settings: Settings) -> PhaseOutcome | None:
    issue = _target_issue(spec, settings)
    return _outcome(check, [issue], url=_endpoint(spec).get("url"), refused=True) if issue else None


def _unreachable(check: str, exc: httpx.HTTPError, url: str, **evidence: Any) -> PhaseOutcome:
    error = f"{type(exc).__name__}: {exc}"
    return _outcome(check, [_transport_issue(exc, url)], url=url, error=error, **evidence)


# --- health, auth, latency ---------------------------------------------------------------------


def check_health(spec: dict[str, Any], settings: Settings) -> PhaseOutcome:
    """GET url + healthPath must answer 2xx within the timeout."""
    if refused := _refused("health", spec, settings):
        return refused
    url = _health_url(spec)
    try:
        with _Probe(settings) as probe:
            reply = probe.fetch("GET", url)
    except httpx.HTTPError as exc:
        return _unreachable("health", exc, url)
    status = reply.status_code
    issues: list[Issue] = []
    if status >= 500:
        issues.append(Issue(code="endpoint-server-error", message=f"health check answered {status}", pointer=_URL))
    elif not 200 <= status < 300:
        hint = _redirect_hint(reply)
        message = f"health check answered {status}, expected 2xx{hint}"
        issues.append(Issue(code="health-status", message=message, pointer=_HEALTH_PATH))
    evidence: dict[str, Any] = {"url": url, "status_code": status, "elapsed_ms": round(reply.elapsed_ms, 1)}
    if 300 <= status < 400:
        evidence["location"] = reply.headers.get("Location")
    return _outcome("health", issues, **evidence)


def _redirect_hint(reply: _Reply) -> str:
    if not 300 <= reply.status_code < 400:
        return ""
    location = reply.headers.get("Location")
    return f" (redirect to {location[:200]!r} not followed)" if location else " (redirects are not followed)"


def check_auth(spec: dict[str, Any], settings: Settings) -> PhaseOutcome:
    """An unauthenticated POST with an empty JSON body must be refused with 401 or 403."""
    if refused := _refused("auth", spec, settings):
        return refused
    url = str(_endpoint(spec).get("url"))
    try:
        with _Probe(settings) as probe:
            reply = probe.fetch("POST", url, json={})
    except httpx.HTTPError as exc:
        return _unreachable("auth", exc, url)
    evidence = {"url": url, "status_code": reply.status_code, "www_authenticate": reply.headers.get("WWW-Authenticate")}
    return _outcome("auth", _auth_issues(reply.status_code), **evidence)


def _auth_issues(status: int) -> list[Issue]:
    pointer = "/endpoint/authentication"
    if status in (401, 403):
        return []
    if 200 <= status < 300:
        message = f"endpoint accepts unauthenticated calls (POST without credentials answered {status})"
        return [Issue(code="auth-not-enforced", message=message, pointer=pointer, severity=Severity.CRITICAL)]
    if status >= 500:
        return [Issue(code="endpoint-server-error", message=f"unauthenticated POST answered {status}", pointer=_URL)]
    message = f"unauthenticated POST answered {status}, expected 401 or 403"
    return [Issue(code="auth-unexpected-status", message=message, pointer=pointer)]


def check_latency(spec: dict[str, Any], settings: Settings) -> PhaseOutcome:
    """Sequential GETs of the health URL; the p95 must stay within sla.maxLatencyMs."""
    if refused := _refused("latency", spec, settings):
        return refused
    url = _health_url(spec)
    samples: list[float] = []
    statuses: list[int] = []
    with _Probe(settings) as probe:
        for _ in range(settings.endpoint_tests.latency_samples):
            try:
                reply = probe.fetch("GET", url)
            except httpx.HTTPError as exc:
                return _unreachable("latency", exc, url, samples_ms=samples)
            samples.append(round(reply.elapsed_ms, 1))
            statuses.append(reply.status_code)
    p50, p95 = _percentile(samples, 50), _percentile(samples, 95)
    sla = _section(spec, "sla").get("maxLatencyMs")
    issues: list[Issue] = []
    if isinstance(sla, int | float) and p95 > sla:
        message = f"p95 {p95:.0f} ms exceeds SLA {sla} ms"
        issues.append(Issue(code="latency-sla-exceeded", message=message, pointer="/sla/maxLatencyMs"))
    evidence = {"url": url, "samples_ms": samples, "status_codes": statuses, "sla_ms": sla}
    return _outcome("latency", issues, p50_ms=p50, p95_ms=p95, **evidence)


def _percentile(samples: list[float], pct: int) -> float:
    # Nearest rank: with few samples p95 is the slowest one, the conservative reading of an SLA.
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


# --- security ----------------------------------------------------------------------------------


def check_security(spec: dict[str, Any], settings: Settings) -> PhaseOutcome:
    """TLS 1.2+ with a trusted certificate, and the usual security headers on the health response."""
    if refused := _refused("security", spec, settings):
        return refused
    url = _health_url(spec)
    https = httpx.URL(url).scheme == "https"
    try:
        with _Probe(settings) as probe:
            reply = probe.fetch("GET", url)
    except httpx.HTTPError as exc:
        return _unreachable("security", exc, url)
    # HSTS sent over plain http is ignored by clients (RFC 6797 8.1), so only ask for it on https.
    wanted = ["Strict-Transport-Security", "X-Content-Type-Options"] if https else ["X-Content-Type-Options"]
    missing = [name for name in wanted if name not in reply.headers]
    issues = _tls_issues(reply.tls_version) if https else [_not_tls()]
    issues += [
        Issue(code=f"missing-{name.lower()}", message=f"response lacks the {name} header", severity=Severity.MEDIUM)
        for name in missing
    ]
    evidence = {"url": url, "scheme": httpx.URL(url).scheme, "status_code": reply.status_code}
    present = [name for name in wanted if name in reply.headers]
    evidence |= {"tls_version": reply.tls_version, "headers_present": present, "headers_missing": missing}
    return _outcome("security", issues, **evidence)


def _not_tls() -> Issue:
    return Issue(code="endpoint-not-tls", message="endpoint is not TLS", pointer=_URL, severity=Severity.LOW)


def _tls_issues(version: str | None) -> list[Issue]:
    if version is None:
        message = "could not read the negotiated TLS version"
        return [Issue(code="tls-version-unknown", message=message, pointer=_URL, severity=Severity.MEDIUM)]
    if version not in _MODERN_TLS:
        message = f"negotiated {version}; TLSv1.2 or newer is required"
        return [Issue(code="tls-version-too-old", message=message, pointer=_URL)]
    return []
