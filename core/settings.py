"""One settings tree for the whole platform, read from MARKETPLACE_* variables.

Nested groups use a double underscore: MARKETPLACE_DATABASE__URL,
MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS, and so on.
"""

from __future__ import annotations

import base64
import binascii
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


DEV_JWT_SECRET = "development-only-secret-do-not-use-in-production"  # noqa: S105
# Deliberately public, like DEV_JWT_SECRET: accepted only in development (see Settings below).
DEV_KEY_PEPPER = "development-only-key-pepper-do-not-use-in-production"
DEV_ENCRYPTION_KEY = "ZGV2ZWxvcG1lbnQtb25seS1mZXJuZXQta2V5LTAwMDA="  # base64 of "development-only-fernet-key-0000"


class DatabaseSettings(BaseModel):
    url: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'var' / 'marketplace.db'}",
        description="SQLAlchemy URL of the marketplace database "
        "(postgresql+psycopg://... in production, a SQLite file by default).",
    )
    pool_size: int = Field(default=10, ge=1, description="Connections kept open per process (PostgreSQL).")
    max_overflow: int = Field(default=20, ge=0, description="Extra connections allowed under burst load.")
    echo: bool = Field(default=False, description="Log every SQL statement.")


class PrefectSettings(BaseModel):
    api_url: str = Field(default="http://127.0.0.1:4200/api", description="Prefect server API the service talks to.")
    ui_url: str = Field(default="http://127.0.0.1:4200", description="Prefect UI base, used for links to runs.")
    publish_deployment: str = Field(
        default="publish-service/publish-service", description="'flow-name/deployment-name' of the publish flow."
    )
    deprecate_deployment: str = Field(
        default="deprecate-service/deprecate-service", description="Deployment of the deprecation flow."
    )
    retire_deployment: str = Field(
        default="retire-service/retire-service", description="Deployment of the retirement flow."
    )
    sync_deployment: str = Field(default="sync-registry/sync-registry", description="Deployment of the registry sync.")
    approve_access_deployment: str = Field(
        default="approve-access/approve-access", description="Deployment of the access approval flow."
    )
    request_timeout_seconds: float = Field(default=5.0, gt=0, description="Timeout for calls to the Prefect API.")
    start_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        description="How long creating a flow run may wait for a busy Prefect server to answer; connecting still "
        "gives up after request_timeout_seconds (an unreachable server is reported as fast as before).",
    )
    start_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often the API's run starter looks for owed flow runs it was not woken for (written by "
        "another process, or whose retry came due). A submission wakes it at once.",
    )
    start_concurrency: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Flow runs the API's run starter creates at once, with PostgreSQL as the marketplace database "
        "(requests are taken with row locks). A Prefect server on SQLite wants 1 (the stack runner sets that for "
        "the Prefect it runs on SQLite); on SQLite the starter always creates one at a time.",
    )
    start_first_retry_seconds: float = Field(
        default=0.5, gt=0, description="Delay before the second attempt to start a flow run; later ones double."
    )
    start_max_retry_seconds: float = Field(
        default=30.0, gt=0, description="Longest delay between attempts to start a flow run while Prefect is down."
    )
    run_state_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How old a flow run's state in a status report may be while the run is polled: the API reads "
        "the states of all polled runs in one request per interval, in the background.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for the Prefect server's messaging (prefect-redis). Set: the stack runs Prefect's API "
        "server and its background services (event processing, automations, scheduler) as two processes; "
        "unset: one process with in-memory messaging.",
    )


class RetrySettings(BaseModel):
    base_delay_seconds: float = Field(
        default=1.0, ge=0, description="First retry delay of every task; later ones double (1 s, 2 s, 4 s ...)."
    )
    jitter_factor: float = Field(default=0.2, ge=0, description="Random spread added to retry delays.")


class RegistrySettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="Base URL of the external LLM-Registry; unset means the marketplace DB is the registry.",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per-request timeout for registry calls.")
    failure_threshold: int = Field(default=5, ge=1, description="Consecutive failures that open the circuit.")
    reset_timeout_seconds: float = Field(default=30.0, gt=0, description="How long the circuit stays open.")


class PolicySettings(BaseModel):
    opa_url: str | None = Field(
        default=None, description="External OPA server (REST); unset means in-process evaluation with regopy."
    )
    policies_dir: Path = Field(default=PROJECT_ROOT / "policies", description="Folder of the Rego policies.")
    restricted_countries: list[str] = Field(
        default=["KP", "IR", "SY", "CU"], description="Countries a service may not keep data in."
    )
    min_availability: float = Field(default=99.0, description="Lowest SLA availability (percent) accepted.")
    min_enterprise_availability: float = Field(default=99.9, description="Lowest availability for enterprise support.")
    max_latency_ms: int = Field(default=30000, description="Highest promised p95 latency accepted without a warning.")
    timeout_seconds: float = Field(default=30.0, gt=0, description="Timeout of one policy evaluation.")


class EndpointTestSettings(BaseModel):
    allow_insecure_endpoints: bool = Field(
        default=False,
        description="Accept http:// and loopback endpoints (development and tests only; refused in production).",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of each call to a provider endpoint.")
    latency_samples: int = Field(default=5, ge=1, le=100, description="Requests in the latency probe.")


class LifecycleSettings(BaseModel):
    approval_timeout_seconds: int = Field(
        default=7 * 24 * 3600, ge=1, description="How long a publication waits for a governance decision."
    )
    deprecation_grace_seconds: int = Field(
        default=30 * 24 * 3600, ge=0, description="Time between deprecation and retirement."
    )


# Deliberately public: accepted only in development, refused by the validator below elsewhere.
class KafkaSettings(BaseModel):
    bootstrap_servers: str | None = Field(
        default=None, description="Kafka brokers (host:port,...); unset means events stay in the outbox table only."
    )
    topic: str = Field(default="marketplace.events", description="Topic lifecycle events are published to.")
    max_attempts: int = Field(default=10, ge=1, description="Failed deliveries before an event is dead-lettered.")
    batch_size: int = Field(default=500, ge=1, description="Outbox events the relay reads per round.")
    poll_interval_seconds: float = Field(default=0.5, gt=0, description="Relay pause when the outbox is empty.")
    delivery_timeout_seconds: float = Field(default=30.0, gt=0, description="How long one round waits for acks.")
    retry_base_seconds: float = Field(
        default=1.0, gt=0, description="Wait after an event's first failed delivery; doubles after each next one."
    )
    retry_max_seconds: float = Field(default=300.0, gt=0, description="Longest wait between two delivery attempts.")
    topic_partitions: int = Field(default=3, ge=1, description="Partitions of the topic when the relay creates it.")
    topic_replication_factor: int = Field(
        default=-1, description="Replicas of the topic when the relay creates it (-1: the broker's default)."
    )


class CacheSettings(BaseModel):
    redis_url: str | None = Field(
        default=None, description="Redis for the cache (redis://host:6379/0); unset means an in-process cache."
    )
    service_ttl_seconds: int = Field(default=300, ge=1, description="TTL of cached service reads.")
    search_ttl_seconds: int = Field(default=30, ge=1, description="TTL of cached search results.")
    search_stale_seconds: int = Field(
        default=300,
        ge=0,
        description="How long past its TTL a search result may still be answered while one request "
        "refreshes it in the background (only while no service changed: a change is never served stale).",
    )


class WebhookSettings(BaseModel):
    governance_urls: list[str] = Field(
        default_factory=list, description="Governance endpoints told about publications, approvals, deprecations."
    )
    secret: SecretStr = Field(default=SecretStr(""), description="HMAC-SHA256 key signing every webhook body.")
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per-attempt timeout.")
    max_attempts: int = Field(default=5, ge=1, description="Attempts per delivery (exponential backoff between).")


class SearchSettings(BaseModel):
    backend: str = Field(default="sql", pattern="^(sql|elasticsearch)$", description="sql or elasticsearch.")
    elasticsearch_url: str | None = Field(default=None, description="Elasticsearch URL (backend elasticsearch).")
    index: str = Field(default="marketplace-services", description="Elasticsearch index name.")


class AuthSettings(BaseModel):
    jwt_algorithm: str = Field(
        default="HS256",
        pattern="^(HS256|RS256)$",
        description="Signature algorithm of bearer tokens: HS256 (shared secret, development) or RS256 (production).",
    )
    jwt_secret: SecretStr = Field(
        default=SecretStr(DEV_JWT_SECRET), description="HS256 signing secret; must be set outside development."
    )
    jwt_public_key_file: Path | None = Field(
        default=None, description="RS256: PEM file of the identity provider's public key."
    )
    jwks_file: Path | None = Field(
        default=None, description="RS256: JWKS file of the identity provider's keys (picked by the token's `kid`)."
    )
    jwt_issuer: str | None = Field(default=None, description="Required `iss` claim, when set.")
    jwt_audience: str | None = Field(default=None, description="Required `aud` claim, when set.")
    leeway_seconds: int = Field(default=30, ge=0, le=300, description="Clock skew tolerated on `exp`/`nbf`.")
    token_ttl_seconds: int = Field(default=24 * 3600, ge=60, description="Lifetime of issued development tokens.")


class WorkerSettings(BaseModel):
    mode: Literal["warm", "process"] = Field(
        default="warm",
        description="warm: flow runs in threads of one long-lived worker process (fast start); "
        "process: Prefect's process worker, a new Python process per run (isolation).",
    )
    threads: int = Field(default=32, ge=1, le=512, description="Warm worker: flow runs executed at once (per process).")
    query_seconds: float = Field(
        default=2.0, gt=0, description="Worker poll interval (the warm worker also wakes on Prefect events)."
    )
    heartbeat_seconds: int = Field(
        default=30, ge=30, description="How often a running flow run sends a heartbeat (Prefect's minimum is 30)."
    )
    crash_after_seconds: int = Field(
        default=90, ge=31, description="A running flow run without a heartbeat for this long is marked Crashed."
    )
    drain_seconds: int = Field(
        default=60,
        ge=0,
        description="Warm worker: on SIGTERM/SIGINT it takes no new runs and gives the runs in flight this long to "
        "finish or suspend, then exits; runs still going are reported Crashed (and reconciled). Kubernetes' "
        "terminationGracePeriodSeconds of the worker must exceed it.",
    )

    @model_validator(mode="after")
    def _crash_after_a_missed_heartbeat(self) -> WorkerSettings:
        if self.crash_after_seconds <= self.heartbeat_seconds:
            raise ValueError("worker.crash_after_seconds must be longer than worker.heartbeat_seconds")
        return self


class RateLimitSettings(BaseModel):
    enabled: bool = Field(default=True, description="Limit publishing requests per client.")
    publish_limit: int = Field(default=100, ge=1, description="Publishing requests a client may make per window.")
    window_seconds: int = Field(default=15 * 60, ge=1, description="Length of the rate-limit window.")
    redis_url: str | None = Field(
        default=None,
        description="Redis holding the counters, shared by all API processes (defaults to cache.redis_url); "
        "unset means per-process counters.",
    )


class IdempotencySettings(BaseModel):
    ttl_seconds: int = Field(
        default=24 * 3600, ge=60, description="How long an Idempotency-Key and its stored response are kept."
    )
    in_flight_seconds: int = Field(
        default=120, ge=5, description="After this, a key whose request never finished may be used again."
    )


class LimitSettings(BaseModel):
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    max_openapi_paths: int = Field(default=2000, ge=1, description="Largest number of paths in an OpenAPI document.")


class ApiSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="Interface the API listens on.")
    port: int = Field(default=8000, description="Port the API listens on.")
    public_url: str = Field(default="http://127.0.0.1:8000", description="Base URL used in links the API returns.")
    shutdown_grace_seconds: float = Field(
        default=30.0, gt=0, description="On SIGTERM/SIGINT, how long in-flight requests may take to finish."
    )
    status_wait_seconds: float = Field(
        default=0.005,
        ge=0,
        description="How long a status read waits for a changed record to load before it answers with the one "
        "this process served last (the load goes on; the next read has it). A polled status answers quickly even "
        "while the database is slow.",
    )
    realtime_priority: bool = Field(
        default=False,
        description="Opt-in: run the API's threads under the SCHED_RR real-time policy when the process may (root "
        "or CAP_SYS_NICE), so a request is picked up the moment it arrives even while batch work on the same cores "
        "(Prefect, the workers, PostgreSQL) keeps every core busy. Off by default: a real-time thread escapes a "
        "container's CPU quota, runs ahead of the database it waits for, and is inherited by processes started "
        "with subprocess. Give the API CPU of its own instead (a cpuset, a dedicated node).",
    )


class TelemetrySettings(BaseModel):
    """Traces (core/telemetry.py): off unless an OTLP endpoint is given here or in OTEL_EXPORTER_OTLP_ENDPOINT."""

    otlp_endpoint: str | None = Field(
        default=None,
        description="Base URL of an OTLP/HTTP receiver (an OpenTelemetry Collector, Jaeger, Tempo: "
        "http://collector:4318); spans go to <url>/v1/traces. Unset, and OTEL_EXPORTER_OTLP_ENDPOINT unset too: "
        "no tracing at all (no exporter, no spans recorded).",
    )
    sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces recorded (a request that arrives with a sampled traceparent is always "
        "recorded: the caller decided).",
    )


class GatewaySettings(BaseModel):
    """The data plane (gateway/): where it listens, what it talks to, how it limits and times calls."""

    host: str = Field(default="127.0.0.1", description="Interface the gateway listens on.")
    port: int = Field(default=8080, description="Port the gateway listens on (`make up` starts one process).")
    redis_url: str | None = Field(
        default=None,
        description="Redis for rate limits, quotas and the usage hand-off, shared by every gateway process "
        "(defaults to cache.redis_url); unset: in-process limits and a local journal (one process only).",
    )
    redis_timeout_seconds: float = Field(
        default=0.25, gt=0, description="Socket timeout of Redis calls; a slower Redis counts as down."
    )
    redis_retry_seconds: float = Field(
        default=2.0, gt=0, description="After a Redis failure, how long limits are counted in-process before retrying."
    )
    connect_timeout_seconds: float = Field(default=3.0, gt=0, description="Upstream: opening a connection.")
    first_byte_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Upstream: the longest wait for the provider's next bytes — its first (the status line) and, "
        "in a stream, each later one.",
    )
    total_timeout_seconds: float = Field(
        default=300.0, gt=0, description="Upstream: the whole call, a stream's last byte included."
    )
    pool_size: int = Field(default=256, ge=1, description="Upstream connections kept per process (all providers).")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Gateway processes `python -m gateway` starts on the one port (uvicorn's workers); each has "
        "its own event loop, connection pool and Redis connection. More processes use more cores.",
    )
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive upstream failures of one provider that open its circuit."
    )
    breaker_reset_seconds: float = Field(
        default=10.0, gt=0, description="How long an open circuit refuses calls (503) before one trial call."
    )
    default_max_tokens: int = Field(
        default=4096,
        ge=1,
        description="Tokens reserved against a token quota for a call that names no max_tokens and whose plan "
        "sets no limit of its own.",
    )
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Largest request body (413 above).")
    journal_dir: Path = Field(
        default=PROJECT_ROOT / "var" / "gateway-journal",
        description="Local append-only journal of usage records, used when Redis is down or not configured.",
    )
    journal_fsync: bool = Field(
        default=True, description="fsync each group of journal appends before the answers complete."
    )
    directory_refresh_seconds: float = Field(
        default=0.5,
        gt=0,
        description="How often a process checks whether services changed (a fingerprint read); changes "
        "announced over Redis reach it sooner. Keys and access follow consumption.change_poll_seconds.",
    )


class UsageSettings(BaseModel):
    """The usage writer: records handed off by the gateway, batched into the database."""

    inline: bool = Field(
        default=True,
        description="Each gateway process runs a usage writer too (the embedded default). false: run "
        "`python -m gateway.writer` processes instead, so that database work never shares a process with calls.",
    )
    batch_size: int = Field(default=1000, ge=1, description="Records written per database transaction at most.")
    idle_claim_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Records another (dead) gateway process took from the stream but did not acknowledge for this "
        "long are claimed and written by a live one.",
    )
    retry_seconds: float = Field(default=1.0, gt=0, description="Pause after a failed database write before retrying.")
    linger_seconds: float = Field(
        default=0.2,
        ge=0,
        description="After a batch smaller than batch_size, how long the writer lets records gather before "
        "reading again: fewer, larger transactions (the records are already safe in Redis or the journal).",
    )
    partitions_ahead_months: int = Field(
        default=3,
        ge=1,
        le=24,
        description="PostgreSQL: monthly partitions of the usage records that maintain-usage-partitions keeps "
        "created ahead of the current month.",
    )
    retention_months: int = Field(
        default=13,
        ge=1,
        description="Whole months of usage records kept in the database before the current one; older months "
        "are exported to archive_dir, verified, and removed (their daily rollups stay).",
    )
    archive_dir: Path = Field(
        default=PROJECT_ROOT / "var" / "usage-archive",
        description="Where months past retention are written, one gzip-compressed CSV file per month.",
    )
    rollup_lag_seconds: float = Field(
        default=300.0,
        ge=0,
        description="rollup-usage rolls up rows stored until this long ago: longer than any usage write "
        "transaction lasts, so no row commits behind the watermark. Reads stay exact meanwhile.",
    )


class HealthSettings(BaseModel):
    """Provider health: the `monitor-services` flow's probes, the SLA verdict and automatic suspension."""

    interval_seconds: int = Field(
        default=60,
        ge=1,
        description="How often monitor-services runs (its schedule) and the traffic window each check reads; "
        "one check per service per interval (a rerun in the same interval records nothing new).",
    )
    consecutive_checks: int = Field(
        default=3,
        ge=1,
        description="Consecutive checks breaching the SLA that suspend a service, and consecutive healthy "
        "checks that reinstate a service the monitor suspended.",
    )
    window_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Span of gateway traffic (usage records) each check judges, ending at the check; "
        "unset: the interval (windows then do not overlap).",
    )
    timeout_seconds: float = Field(default=5.0, gt=0, description="Timeout of each probe call to a provider.")
    probe_concurrency: int = Field(default=8, ge=1, le=64, description="Services probed at once, per batch.")
    batch_size: int = Field(
        default=50, ge=1, le=1000, description="Services per probe and record task (task runs cost the Prefect server)."
    )
    observed_window_seconds: int = Field(
        default=24 * 3600, ge=60, description="Span of the observed availability shown with a service."
    )
    history_limit: int = Field(default=20, ge=1, le=500, description="Recent checks listed by the health endpoint.")

    @property
    def window(self) -> int:
        return self.window_seconds or self.interval_seconds


class PlanSettings(BaseModel):
    """The plan a service gets when its pricing publishes none."""

    name: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Plan name.")
    requests_per_minute: int = Field(default=60, ge=1, description="Requests per minute per consumer and service.")
    key_requests_per_minute: int | None = Field(default=None, ge=1, description="Requests per minute per key.")
    requests_per_month: int | None = Field(default=None, ge=1, description="Requests per calendar month (UTC).")
    tokens_per_month: int | None = Field(default=1_000_000, ge=1, description="Tokens per calendar month (UTC).")
    max_tokens_per_request: int | None = Field(
        default=None, ge=1, description="Tokens reserved for a request that names no max_tokens."
    )
    price_per_month: Decimal = Field(default=Decimal(0), ge=0, description="Flat monthly price of the plan.")


class ConsumptionSettings(BaseModel):
    key_pepper: SecretStr = Field(
        default=SecretStr(DEV_KEY_PEPPER),
        description="Server-side secret mixed into every API key hash (HMAC-SHA256); must be set outside "
        "development, at least 32 characters in production. Changing it invalidates every key.",
    )
    encryption_keys: dict[str, SecretStr] = Field(
        default_factory=lambda: {"dev": SecretStr(DEV_ENCRYPTION_KEY)},
        description="Fernet keys (url-safe base64 of 32 bytes) by key id, as a JSON object, that encrypt "
        "provider credentials and signing secrets at rest. The first (or `encryption_key_id`) encrypts; all "
        "decrypt, so a new key can be added in front and old rows re-encrypted (python -m storage.encryption).",
    )
    encryption_key_id: str | None = Field(default=None, description="Id of the key that encrypts (default: first).")
    max_keys_per_consumer: int = Field(default=100, ge=1, description="Live API keys a consumer may hold.")
    key_rotation_max_grace_seconds: int = Field(
        default=7 * 24 * 3600, ge=0, description="Longest time a rotated key keeps working after its rotation."
    )
    signing_rotation_max_grace_seconds: int = Field(
        default=7 * 24 * 3600, ge=0, description="Longest time a replaced signing secret is still signed with."
    )
    access_approval_timeout_seconds: int = Field(
        default=7 * 24 * 3600, ge=1, description="How long an access request waits for a decision before it expires."
    )
    default_plan: PlanSettings = Field(default_factory=PlanSettings, description="Plan of services that publish none.")
    change_poll_seconds: float = Field(
        default=0.25,
        gt=0,
        le=1.0,
        description="How often a gateway reads the consumption change counter (the only signal without Redis; "
        "a safety net beside Redis pub/sub).",
    )

    @field_validator("encryption_keys")
    @classmethod
    def _fernet_keys(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        if not keys:
            raise ValueError("at least one encryption key is needed")
        for key_id, key in keys.items():
            if not key_id or len(key_id) > 32 or not key_id.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"encryption key id {key_id!r} must be 1-32 letters, digits, '-' or '_'")
            if len(_urlsafe_bytes(key.get_secret_value())) != 32:
                raise ValueError(f"encryption key {key_id!r} must be url-safe base64 of 32 bytes (a Fernet key)")
        return keys

    @model_validator(mode="after")
    def _primary_known(self) -> ConsumptionSettings:
        if self.encryption_key_id is not None and self.encryption_key_id not in self.encryption_keys:
            raise ValueError(f"encryption_key_id {self.encryption_key_id!r} is not one of encryption_keys")
        return self

    def uses_placeholders(self) -> list[str]:
        """Which secrets still hold the public development values."""
        found = []
        if self.key_pepper.get_secret_value() == DEV_KEY_PEPPER:
            found.append("consumption.key_pepper (MARKETPLACE_CONSUMPTION__KEY_PEPPER)")
        if any(k.get_secret_value() == DEV_ENCRYPTION_KEY for k in self.encryption_keys.values()):
            found.append("consumption.encryption_keys (MARKETPLACE_CONSUMPTION__ENCRYPTION_KEYS)")
        return found


def _urlsafe_bytes(value: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value.encode())
    except (binascii.Error, ValueError):
        return b""


class BillingSettings(BaseModel):
    """Monthly statements and quota alerts (docs/statements.md)."""

    marketplace_fee_percent: Decimal = Field(
        default=Decimal("10"),
        ge=0,
        le=100,
        description="The marketplace's cut of what consumers paid for a provider's services, in percent; a "
        "provider's statement shows its gross, this fee and the net it earns.",
    )
    quota_alert_thresholds: list[int] = Field(
        default=[80, 100],
        description="Percentages of a monthly quota (requests, tokens) at which the consumer is told, once each "
        "per subscription and month.",
    )
    quota_alert_deployment: str = Field(
        default="send-quota-alerts/send-quota-alerts",
        description="'flow-name/deployment-name' the usage writer owes a run of when a quota threshold is reached.",
    )

    @field_validator("quota_alert_thresholds")
    @classmethod
    def _percentages(cls, values: list[int]) -> list[int]:
        if not values or any(not 1 <= v <= 1000 for v in values):
            raise ValueError("quota alert thresholds are percentages between 1 and 1000")
        return sorted(set(values))


class Settings(BaseSettings):
    """Everything configurable, with embedded defaults that need no set-up."""

    model_config = SettingsConfigDict(env_prefix="MARKETPLACE_", env_nested_delimiter="__", extra="ignore")

    environment: Environment = Field(default=Environment.DEVELOPMENT, description="development, test or production.")
    log_level: str = Field(default="INFO", description="Python log level.")
    log_format: Literal["json", "text"] | None = Field(
        default=None, description="json (one object a line) or text; unset: text in development, json elsewhere."
    )
    database: DatabaseSettings = DatabaseSettings()
    prefect: PrefectSettings = PrefectSettings()
    retries: RetrySettings = RetrySettings()
    registry: RegistrySettings = RegistrySettings()
    policy: PolicySettings = PolicySettings()
    endpoint_tests: EndpointTestSettings = EndpointTestSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    auth: AuthSettings = AuthSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    worker: WorkerSettings = WorkerSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    kafka: KafkaSettings = KafkaSettings()
    cache: CacheSettings = CacheSettings()
    webhooks: WebhookSettings = WebhookSettings()
    search: SearchSettings = SearchSettings()
    limits: LimitSettings = LimitSettings()
    api: ApiSettings = ApiSettings()
    gateway: GatewaySettings = GatewaySettings()
    usage: UsageSettings = UsageSettings()
    consumption: ConsumptionSettings = ConsumptionSettings()
    billing: BillingSettings = BillingSettings()
    health: HealthSettings = HealthSettings()
    telemetry: TelemetrySettings = TelemetrySettings()

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        self._check_auth()
        self._check_consumption()
        unsigned = self.webhooks.governance_urls and not self.webhooks.secret.get_secret_value()
        if self.environment is not Environment.DEVELOPMENT and unsigned:
            raise ValueError("webhooks.secret must be set to sign webhooks (MARKETPLACE_WEBHOOKS__SECRET)")
        if self.environment is Environment.PRODUCTION:
            if self.endpoint_tests.allow_insecure_endpoints:
                raise ValueError("endpoint_tests.allow_insecure_endpoints must be false in production")
            if self.database.url.startswith("sqlite"):
                raise ValueError("production needs a PostgreSQL database.url, not SQLite")
        return self

    def _check_auth(self) -> None:
        auth = self.auth
        if auth.jwt_algorithm == "RS256":
            if not (auth.jwt_public_key_file or auth.jwks_file):
                raise ValueError("RS256 needs auth.jwt_public_key_file or auth.jwks_file")
        elif self.environment is not Environment.DEVELOPMENT and auth.jwt_secret.get_secret_value() == DEV_JWT_SECRET:
            raise ValueError("auth.jwt_secret must be set outside development (MARKETPLACE_AUTH__JWT_SECRET)")
        elif self.is_production and len(auth.jwt_secret.get_secret_value()) < 32:
            raise ValueError("auth.jwt_secret must be at least 32 characters in production")

    def _check_consumption(self) -> None:
        placeholders = self.consumption.uses_placeholders()
        if self.environment is not Environment.DEVELOPMENT and placeholders:
            raise ValueError(f"set real secrets outside development: {', '.join(placeholders)}")
        if self.is_production and len(self.consumption.key_pepper.get_secret_value()) < 32:
            raise ValueError("consumption.key_pepper must be at least 32 characters in production")

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
