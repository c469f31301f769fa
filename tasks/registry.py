"""Registry sync: register the service with the LLM-Registry, or with our own database."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pybreaker
from prefect import task
from prefect.context import TaskRunContext
from pydantic import BaseModel

from checks.timing import timed
from core.domain import Outcome, Phase, PhaseOutcome
from core.settings import RegistrySettings
from storage.database import session_scope
from storage.repositories import audit, versions
from storage.repositories.services import SYSTEM
from storage.repositories.services import get as get_service
from tasks._common import PhaseInput, SpecInput, backoff, jitter, record_outcomes
from tasks.context import flow_context
from tasks.run_log import log_phases

LOCAL_PREFIX = "marketplace:"
log = logging.getLogger("marketplace.registry")
_breakers: dict[str, pybreaker.CircuitBreaker] = {}
# Registry ids an attempt of `registry_sync` obtained but could not store (its database write
# failed): the next attempt in this process stores the same id instead of registering twice.
_unsaved: dict[str, str] = {}


def _breaker(settings: RegistrySettings) -> pybreaker.CircuitBreaker:
    """One circuit breaker per registry URL and process: 5 failures in a row open it."""
    key = settings.url or ""
    if key not in _breakers:
        _breakers[key] = pybreaker.CircuitBreaker(
            fail_max=settings.failure_threshold, reset_timeout=settings.reset_timeout_seconds, name="llm-registry"
        )
    return _breakers[key]


class RegistryClient:
    """HTTP client of the external LLM-Registry (REST), behind a circuit breaker."""

    def __init__(self, settings: RegistrySettings) -> None:
        if not settings.url:
            raise ValueError("RegistryClient needs registry.url")
        self._settings = settings
        self._breaker = _breaker(settings)

    def register(self, service_id: str, spec: dict[str, Any]) -> str:
        """POST /api/v1/services; returns the registry's id for the service."""
        response = self._breaker.call(self._request, "POST", "/api/v1/services", _entry(service_id, spec))
        return str(response.json()["id"])

    def update(self, registry_id: str, service_id: str, spec: dict[str, Any]) -> None:
        """PUT the service's current metadata to its registry entry (the whole entry, as registered)."""
        self._breaker.call(self._request, "PUT", f"/api/v1/services/{registry_id}", _entry(service_id, spec))

    def deregister(self, registry_id: str, *, wait_if_open: bool = False) -> None:
        """DELETE the entry; a 404 means it is already gone, which is what we want.

        `wait_if_open` (compensation): an open circuit is waited out, at most `reset_timeout_seconds`,
        and the call is then the half-open trial. Without it, an outage longer than the retry
        delays would make the rollback give up and leave the entry in the registry.
        """
        args = ("DELETE", f"/api/v1/services/{registry_id}", None, (404,))
        try:
            self._breaker.call(self._request, *args)
        except pybreaker.CircuitBreakerError:
            if not wait_if_open:
                raise
            time.sleep(self._until_half_open())
            self._breaker.call(self._request, *args)

    def _until_half_open(self) -> float:
        """Seconds until the open circuit lets a trial call through."""
        timeout = self._settings.reset_timeout_seconds
        opened_at = getattr(self._breaker._state_storage, "opened_at", None)
        if not isinstance(opened_at, datetime):
            return timeout
        elapsed = (datetime.now(UTC) - opened_at).total_seconds()
        return min(timeout, max(0.0, timeout - elapsed) + 0.05)

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, accept: tuple[int, ...] = ()
    ) -> httpx.Response:
        with httpx.Client(base_url=str(self._settings.url), timeout=self._settings.timeout_seconds) as client:
            response = client.request(method, path, json=body)
        if response.status_code not in accept:
            response.raise_for_status()
        return response


def _entry(service_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The registry's view of a service: identity, capabilities, and metadata linking back to us."""
    return {
        "name": spec["name"],
        "version": spec["version"],
        "provider": spec["provider"],
        "capabilities": spec.get("capabilities", []),
        "metadata": {
            "marketplaceId": service_id,
            "category": spec["category"],
            "tags": spec.get("tags", []),
            "description": spec["description"],
        },
    }


def register(service_id: str, spec: dict[str, Any], settings: RegistrySettings) -> str:
    """Register with the external registry when configured; otherwise our database is the registry."""
    if settings.url:
        return RegistryClient(settings).register(service_id, spec)
    return f"{LOCAL_PREFIX}{service_id}"


def deregister(registry_id: str, settings: RegistrySettings, *, wait_if_open: bool = False) -> None:
    if settings.url and not registry_id.startswith(LOCAL_PREFIX):
        RegistryClient(settings).deregister(registry_id, wait_if_open=wait_if_open)


class RegistryEntryInput(PhaseInput):
    registry_id: str


@task(name="registry-sync", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter(), timeout_seconds=60)
def registry_sync(inp: SpecInput) -> PhaseOutcome:
    """Register the service and keep its registry id (the flow registers the undo step).

    Retried attempts register at most once: an id already stored for the version (an attempt
    whose phase record failed) or obtained by an attempt whose database write failed is reused.
    """

    def check() -> PhaseOutcome:
        settings = flow_context().settings.registry
        with session_scope() as session:
            stored = versions.get(session, inp.version_id).registry_id
        registry_id = stored or _unsaved.get(inp.version_id) or register(inp.service_id, inp.spec, settings)
        if registry_id != stored:
            try:
                with session_scope() as session:
                    versions.set_registry_id(session, inp.version_id, registry_id)
            except BaseException:
                _keep_or_undo(registry_id, inp.version_id, settings)
                raise
        _unsaved.pop(inp.version_id, None)
        return PhaseOutcome(
            phase=Phase.REGISTRY_SYNC,
            outcome=Outcome.PASSED,
            evidence={"registryId": registry_id, "registry": settings.url or "marketplace-database"},
        )

    outcome, started_at = timed(check)
    record_outcomes(inp, [(outcome, started_at)], next_phase=Phase.PERSISTENCE)
    log_phases([outcome])
    return outcome


def _keep_or_undo(registry_id: str, version_id: str, settings: RegistrySettings) -> None:
    """The registry has an entry the database does not know about: the next attempt stores it;
    after the last attempt nothing will, so take it out again (best effort) rather than leak it."""
    context = TaskRunContext.get()
    if context is None or context.task_run.run_count <= context.task.retries:
        _unsaved[version_id] = registry_id
        return
    _unsaved.pop(version_id, None)
    try:
        deregister(registry_id, settings, wait_if_open=True)
    except Exception:
        log.exception("registry entry %s of version %s could not be stored nor removed", registry_id, version_id)


@task(name="remove-registry-entry", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def remove_registry_entry(inp: RegistryEntryInput) -> None:
    """Compensation: take the entry out of the registry and record that we did (an open circuit is waited out)."""
    deregister(inp.registry_id, flow_context().settings.registry, wait_if_open=True)
    with session_scope() as session:
        versions.set_registry_id(session, inp.version_id, None)
        audit.append(
            session,
            service_id=inp.service_id,
            action="rollback",
            actor=SYSTEM.id,
            actor_role=SYSTEM.role,
            reason="registry entry removed",
            flow_run_id=inp.flow_run_id,
            details={"registryId": inp.registry_id},
        )


class RegistryUpdateInput(BaseModel):
    service_id: str


@task(name="update-registry-entry", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def update_registry_entry(inp: RegistryUpdateInput) -> str:
    """Send the service's current metadata to the external registry (nothing to do when we are the registry)."""
    settings = flow_context().settings.registry
    with session_scope() as session:
        service = get_service(session, inp.service_id)
        registry_id, spec = service.registry_id, dict(service.spec)
    if not settings.url or not registry_id or registry_id.startswith(LOCAL_PREFIX):
        return "marketplace database is the registry: nothing to sync"
    RegistryClient(settings).update(registry_id, inp.service_id, spec)
    return f"registry entry {registry_id} updated"
