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
import orjson
from sqlalchemy import create_engine, update
from sqlalchemy.orm import Session

from core.settings import PROJECT_ROOT
from storage.models import AuditLog, Service
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


def add_service(db_url: str, base_url: str, *, name: str = "fake-chat", status: str = "active", **columns: Any) -> str:
    """A service row as the publish pipeline leaves it, calling `base_url`."""
    service_id = str(uuid.uuid4())
    spec = {"name": name, "version": "1.0.0", "endpoint": {"url": base_url}, "pricing": PRICING}
    engine = create_engine(db_url)
    with Session(engine) as session:
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
        session.commit()
    engine.dispose()
    return service_id


def set_status(db_url: str, service_id: str, status: str, reason: str | None = None, **columns: Any) -> None:
    """Move a service (as the lifecycle flows and admin routes do), with the audit record of a suspension."""
    engine = create_engine(db_url)
    with Session(engine) as session:
        values = {"status": status, "updated_at": datetime.now(UTC), **columns}
        session.execute(update(Service).where(Service.id == service_id).values(**values))
        if reason is not None:
            session.add(
                AuditLog(service_id=service_id, action="suspend", actor="admin", to_status=status, reason=reason)
            )
        session.commit()
    engine.dispose()


def key_entry(
    secret: str, consumer: str, service_ids: list[str], *, key_id: str | None = None, **plan: Any
) -> dict[str, Any]:
    """One key of a keys file, subscribed to each service under a plan with these limits."""
    return {
        "secret": secret,
        "id": key_id or f"key-{consumer}",
        "consumer_id": consumer,
        "subscriptions": [
            {"id": f"sub-{consumer}-{sid[:8]}", "service_id": sid, "plan": {"name": "test", **plan}}
            for sid in service_ids
        ],
    }


def write_keys(path: Path, keys: list[dict[str, Any]], credentials: dict[str, dict[str, str]] | None = None) -> None:
    """Replace the keys file at once (a reader never sees half of it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({"keys": keys, "credentials": credentials or {}}))
    os.replace(tmp, path)


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
