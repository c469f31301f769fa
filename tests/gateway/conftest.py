"""A gateway in front of the fake LLM provider, on PostgreSQL and Redis (the test database number)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from storage.migrate import upgrade
from tests.support.gateway import GatewayProcess, add_service, key_entry, write_keys
from tests.support.llm_provider import LlmProvider
from tests.support.services import REDIS_URL, require_postgres, require_tcp, temporary_database

SECRET = "mk_test_" + "a" * 40


@dataclass
class Setup:
    db_url: str
    workdir: Path
    provider: LlmProvider
    redis_url: str | None
    service_id: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)

    @property
    def keys_file(self) -> Path:
        return self.workdir / "keys.json"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "MARKETPLACE_DATABASE__URL": self.db_url,
            "MARKETPLACE_GATEWAY__KEYS_FILE": str(self.keys_file),
            "MARKETPLACE_GATEWAY__JOURNAL_DIR": str(self.workdir / "journal"),
            "MARKETPLACE_GATEWAY__DIRECTORY_REFRESH_SECONDS": "0.2",
            "MARKETPLACE_USAGE__IDLE_CLAIM_SECONDS": "1",
            "MARKETPLACE_USAGE__RETRY_SECONDS": "0.2",
            "MARKETPLACE_CACHE__REDIS_URL": "",
        }
        if self.redis_url:
            env["MARKETPLACE_GATEWAY__REDIS_URL"] = self.redis_url
        env.update(overrides)
        return env

    def gateway(self, name: str = "gateway", **overrides: str) -> GatewayProcess:
        return GatewayProcess(self.env(**overrides), self.workdir / f"{name}.log")

    def set_keys(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        write_keys(self.keys_file, keys)


@pytest.fixture
def redis_url() -> str:
    url = REDIS_URL
    require_tcp("127.0.0.1", 6379, "Redis")
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def provider() -> Iterator[LlmProvider]:
    with LlmProvider() as p:
        yield p


@pytest.fixture
def setup(tmp_path: Path, provider: LlmProvider, redis_url: str) -> Iterator[Setup]:
    """A migrated PostgreSQL database with one active service and one key subscribed to it."""
    require_postgres()
    with temporary_database(prefix="mkt_gw") as db_url:
        upgrade(db_url)
        s = Setup(db_url, tmp_path, provider, redis_url)
        s.service_id = add_service(db_url, provider.url)
        s.set_keys([key_entry(SECRET, "consumer-1", [s.service_id], requests_per_minute=1000)])
        yield s
