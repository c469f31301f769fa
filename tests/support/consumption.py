"""Helpers for consumption tests: live services written through the repositories, key checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.keys import parse_key
from core.settings import get_settings
from storage.database import session_scope
from storage.repositories import api_keys, services, versions
from storage.repositories.services import Actor
from tests.support.specs import make_spec


def live_service(name: str = "acme-chat", provider: str = "acme", status: str = "active", **spec: Any) -> str:
    """A service already through the pipeline, in `status` (active unless told)."""
    body = make_spec(name=name, **spec)
    body["provider"] = {"id": provider, "name": provider.title()}
    with session_scope() as session:
        service = services.create_submitted(session, body, Actor(provider, "provider"))
        service.status = status
        for version in versions.for_service(session, service.id):
            version.status = status
        return service.id


def key_refusal(token: str, at: datetime | None = None) -> str | None:
    """What a gateway would say about this key at `at` (None: it may be used), as the gateway reads it."""
    parsed = parse_key(token)
    assert parsed is not None, "not a key"
    key_id, secret = parsed
    with session_scope() as session:
        record = api_keys.load_key(session, key_id)
    if record is None or not record.matches(get_settings().consumption.key_pepper.get_secret_value(), secret):
        return "unknown key"
    return record.refusal(at or datetime.now(UTC))
