"""The API's view of Prefect: start publish runs and read their state."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.responses import SetStateStatus
from prefect.context import SettingsContext, get_settings_context
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES
from prefect.states import Cancelled

from core.errors import ConflictError, UpstreamUnavailableError
from core.settings import PrefectSettings

log = logging.getLogger("marketplace.orchestrator")


@dataclass(frozen=True)
class RunState:
    type: str
    name: str
    message: str | None


class Orchestrator:
    """A long-lived Prefect client shared by the API's worker threads (httpx clients are thread-safe).

    Every call is one attempt bounded by `request_timeout_seconds`: the Prefect client would
    otherwise retry a lost connection five times with exponential backoff (about a minute),
    holding the provider's request and an API thread. A request that cannot reach Prefect
    fails at once with 503, and the caller retries.
    """

    def __init__(self, settings: PrefectSettings) -> None:
        self._settings = settings
        self._client = SyncPrefectClient(settings.api_url, httpx_settings={"timeout": settings.request_timeout_seconds})
        self._deployment_ids: dict[str, UUID] = {}
        self._lock = threading.Lock()
        context = get_settings_context()
        self._profile = context.profile
        self._one_attempt = context.settings.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})

    @contextmanager
    def _bounded(self) -> Iterator[None]:
        """No client-side retries for the calls made inside (a fresh context per call: threads share self)."""
        with SettingsContext(profile=self._profile, settings=self._one_attempt):
            yield

    def open(self) -> None:
        self._client.__enter__()

    def close(self) -> None:
        self._client.__exit__(None, None, None)

    def run_url(self, flow_run_id: str) -> str:
        """Where an operator sees the run in the Prefect UI."""
        return f"{self._settings.ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"

    def start_publish(self, service_id: str, version_id: str) -> str:
        """Create the publish flow run of a version; the idempotency key makes a retried call start one run."""
        parameters = {"service_id": service_id, "version_id": version_id}
        return self._start(self._settings.publish_deployment, parameters, f"publish-{version_id}")

    def start_deprecation(self, service_id: str, actor: str, role: str | None, reason: str, grace_seconds: int) -> str:
        """Create the deprecation flow run (it marks the service and schedules the retirement)."""
        parameters = {
            "service_id": service_id,
            "actor_id": actor,
            "actor_role": role,
            "reason": reason,
            "grace_seconds": grace_seconds,
        }
        return self._start(self._settings.deprecate_deployment, parameters, f"deprecate-{service_id}-{uuid4()}")

    def start_registry_sync(self, service_id: str) -> str:
        """Create the run that pushes changed metadata to the external registry."""
        return self._start(self._settings.sync_deployment, {"service_id": service_id}, f"sync-{service_id}-{uuid4()}")

    def resume_with(self, flow_run_id: str, run_input: dict[str, Any]) -> None:
        """Resume a suspended run with its input, as the Prefect UI's Resume form does."""
        try:
            with self._bounded():
                result = self._client.resume_flow_run(UUID(flow_run_id), run_input=run_input)
        except Exception as exc:
            raise _unavailable(exc) from exc
        if result.status != SetStateStatus.ACCEPT:
            reason = result.details.reason if hasattr(result.details, "reason") else result.status.value
            raise ConflictError(f"the publish run cannot be resumed: {reason}")

    def cancel(self, flow_run_id: str) -> None:
        """Cancel a scheduled run (a retirement that should no longer happen)."""
        try:
            with self._bounded():
                self._client.set_flow_run_state(
                    UUID(flow_run_id), Cancelled(message="cancelled by the marketplace"), force=True
                )
        except Exception as exc:
            raise _unavailable(exc) from exc

    def _start(self, deployment: str, parameters: dict[str, Any], idempotency_key: str) -> str:
        try:
            with self._bounded():
                run = self._client.create_flow_run_from_deployment(
                    self._deployment_id(deployment), parameters=parameters, idempotency_key=idempotency_key
                )
        except Exception as exc:
            log.warning("cannot start %s: %s", deployment, exc)
            raise _unavailable(exc) from exc
        return str(run.id)

    def _deployment_id(self, name: str) -> UUID:
        with self._lock:
            if name not in self._deployment_ids:
                self._deployment_ids[name] = self._client.read_deployment_by_name(name).id
            return self._deployment_ids[name]

    def run_state(self, flow_run_id: str) -> RunState | None:
        """The run's current Prefect state, or None when Prefect cannot be asked right now."""
        try:
            with self._bounded():
                run = self._client.read_flow_run(UUID(flow_run_id))
        except Exception as exc:
            log.warning("cannot read flow run %s: %s", flow_run_id, exc)
            return None
        if run.state is None:
            return None
        return RunState(
            type=run.state.type.value, name=run.state.name or run.state.type.value, message=run.state.message
        )

    def healthy(self) -> bool:
        """Whether the Prefect API answers its health check."""
        with self._bounded():
            return self._client.api_healthcheck() is None


def _unavailable(exc: Exception) -> UpstreamUnavailableError:
    """The client gets a plain 503; the detail (internal URLs, hosts) goes to the log only."""
    log.warning("Prefect call failed: %s: %s", type(exc).__name__, exc)
    return UpstreamUnavailableError("the orchestrator (Prefect) is unavailable; retry later")
