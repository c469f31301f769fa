"""Gateway processes for tests and benchmarks: services in the database, keys in a file, `python -m gateway`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

from core.plans import Plan
from core.settings import PROJECT_ROOT, get_settings
from storage.database import mark_services_changed, session_scope
from storage.encryption import box_for
from storage.models import AuditLog, Service
from storage.repositories import api_keys, consumers, credentials, service_subscriptions, services
from storage.repositories.api_keys import KeySpec
from storage.repositories.services import Actor
from tests.support.services import free_port

PRICING = {
    "model": "per-token",
    "currency": "USD",
    "rates": [
        {"unit": "input_tokens", "price": 0.5, "per": 1000000},
        {"unit": "output_tokens", "price": 1.5, "per": 1000000},
        {"unit": "request", "price": 0.0001},
    ],
}


def add_service(base_url: str, *, name: str = "fake-chat", status: str = "active", **columns: Any) -> str:
    """A service row as the publish pipeline leaves it, calling `base_url`."""
    service_id = str(uuid.uuid4())
    spec = {"name": name, "version": "1.0.0", "endpoint": {"url": base_url}, "pricing": PRICING}
    with session_scope() as session:
        session.add(
            Service(
                id=service_id,
                name=name,
                version="1.0.0",
                description="test service",
                provider_id="acme",
                provider_name="Acme",
                category="text-generation",
                tags=[],
                spec=spec,
                status=status,
                published_at=datetime.now(UTC),
                **columns,
            )
        )
    return service_id


def set_status(service_id: str, status: str, reason: str | None = None, **columns: Any) -> None:
    """Move a service (as the lifecycle flows and admin routes do), with the audit record of a suspension."""
    with session_scope() as session:
        values = {"status": status, "updated_at": datetime.now(UTC), **columns}
        session.execute(update(Service).where(Service.id == service_id).values(**values))
        if reason is not None:
            session.add(
                AuditLog(service_id=service_id, action="suspend", actor="admin", to_status=status, reason=reason)
            )
        mark_services_changed(session, [service_id])  # a Core UPDATE: say so, as repositories do


def consumer_with_key(
    consumer_id: str,
    service_ids: list[str],
    plan: Plan,
    *,
    key_services: list[str] | None = None,
    key_rpm: int | None = None,
) -> tuple[str, str]:
    """A consumer subscribed to each service under `plan`, and a new key of it: (key id, token).
    Uses the configured database (MARKETPLACE_DATABASE__URL), as the API would."""
    actor = Actor(consumer_id, "consumer")
    pepper = get_settings().consumption.key_pepper.get_secret_value()
    with session_scope() as session:
        consumers.ensure(session, consumer_id, actor)
        for service_id in service_ids:
            service = services.get(session, service_id)
            service_subscriptions.subscribe(session, consumer_id, service, plan, "USD", actor, pending=False)
        spec = KeySpec("test", service_ids=key_services, requests_per_minute=key_rpm)
        key, issued = api_keys.create(session, consumer_id, spec, pepper, actor)
    return key.id, issued.token


def set_credential(service_id: str, value: str) -> list[str]:
    """The provider's credential for the service, and its signing secrets (current first)."""
    box = box_for(get_settings().consumption)
    actor = Actor("acme", "provider")
    with session_scope() as session:
        credentials.set_credential(session, service_id, "bearer", "Authorization", value, box, actor)
        credentials.ensure_signing_secret(session, service_id, box, actor)
    with session_scope() as session:
        return credentials.live_signing_secrets(session, service_id, box, datetime.now(UTC))


def revoke(consumer_id: str, key_id: str) -> None:
    with session_scope() as session:
        api_keys.revoke(session, consumer_id, key_id, "test", Actor("root", "admin"))


class GatewayProcess:
    """`python -m gateway` on a free port with the given settings; stopped by its pid."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **env, "MARKETPLACE_GATEWAY__PORT": str(self.port)}
        self.env["PYTHONPATH"] = str(PROJECT_ROOT)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> GatewayProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"gateway not up: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
