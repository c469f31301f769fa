"""A key source read from a JSON file: development and tests, until keys live in the database.

{"keys": [{"secret": "...", "id": "...", "consumer_id": "...", "requests_per_minute": null,
           "allowed_services": null, "refused": null, "expires_at": null,
           "subscriptions": [{"id": "...", "service_id": "...", "plan": {"name": "...",
               "requests_per_minute": 100, "requests_per_month": null, "tokens_per_month": null}}]}],
 "credentials": {"<service id>": {"<header>": "<value>"}}}

Only a SHA-256 of each secret is kept in memory. The file is read again when it changes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from gateway.directory import ApiKey, Plan, ServiceRoute, Subscription


def _key(entry: dict[str, Any]) -> ApiKey:
    subs = {
        s["service_id"]: Subscription(
            id=s["id"], service_id=s["service_id"], plan=Plan(**s.get("plan", {"name": "default"}))
        )
        for s in entry.get("subscriptions", [])
    }
    allowed = entry.get("allowed_services")
    return ApiKey(
        id=entry["id"],
        consumer_id=entry["consumer_id"],
        subscriptions=subs,
        allowed_services=frozenset(allowed) if allowed is not None else None,
        requests_per_minute=entry.get("requests_per_minute"),
        refused=entry.get("refused"),
        expires_at=entry.get("expires_at"),
    )


class FileKeySource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: int | None = None
        self._keys: dict[str, ApiKey] = {}
        self._credentials: dict[str, dict[str, str]] = {}

    def version(self) -> Any:
        mtime = self.path.stat().st_mtime_ns if self.path.exists() else None
        if mtime != self._mtime:
            self._read()
            self._mtime = mtime
        return mtime

    def _read(self) -> None:
        data = orjson.loads(self.path.read_bytes()) if self.path.exists() else {}
        self._keys = {hashlib.sha256(e["secret"].encode()).hexdigest(): _key(e) for e in data.get("keys", [])}
        self._credentials = data.get("credentials", {})

    def load(self, secret_hash: str) -> ApiKey | None:
        return self._keys.get(secret_hash)

    def upstream_headers(self, route: ServiceRoute, key: ApiKey, request_id: str) -> dict[str, str]:
        return {**self._credentials.get(route.id, {}), "X-Marketplace-Consumer": key.consumer_id}
