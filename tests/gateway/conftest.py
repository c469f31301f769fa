"""A gateway in front of the fake LLM provider, on PostgreSQL and Redis (the test database number)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from core.plans import Plan
from storage.database import reset_engine
from storage.migrate import upgrade
from tests.support.gateway import GatewayProcess, add_service, consumer_with_key
from tests.support.llm_provider import LlmProvider
from tests.support.services import REDIS_URL, require_postgres, require_tcp, temporary_database

PLAN = Plan(name="test", requests_per_minute=1000)


@dataclass
class Setup:
    db_url: str
    workdir: Path
    provider: LlmProvider
    redis_url: str | None
    service_id: str = ""
    key_id: str = ""
    token: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "MARKETPLACE_DATABASE__URL": self.db_url,
            "MARKETPLACE_GATEWAY__JOURNAL_DIR": str(self.workdir / "journal"),
            "MARKETPLACE_GATEWAY__DIRECTORY_REFRESH_SECONDS": "0.2",
            "MARKETPLACE_USAGE__IDLE_CLAIM_SECONDS": "1",
            "MARKETPLACE_USAGE__RETRY_SECONDS": "0.2",
            "MARKETPLACE_CACHE__REDIS_URL": self.redis_url or "",
            "MARKETPLACE_GATEWAY__REDIS_URL": self.redis_url or "",
        }
        env.update(overrides)
        return env

    def gateway(self, name: str = "gateway", **overrides: str) -> GatewayProcess:
        return GatewayProcess(self.env(**overrides), self.workdir / f"{name}.log")

    def new_consumer(self, consumer_id: str, plan: Plan = PLAN, **key: object) -> None:
        """This setup's key becomes a new consumer's, subscribed to the service under `plan`."""
        self.key_id, self.token = consumer_with_key(consumer_id, [self.service_id], plan, **key)  # type: ignore[arg-type]


@pytest.fixture
def redis_url() -> str:
    require_tcp("127.0.0.1", 6379, "Redis")
    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL


@pytest.fixture
def provider() -> Iterator[LlmProvider]:
    with LlmProvider() as p:
        yield p


@pytest.fixture
def setup(tmp_path: Path, provider: LlmProvider, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """A migrated PostgreSQL database with one active service and a consumer's key subscribed to it."""
    require_postgres()
    with temporary_database(prefix="mkt_gw") as db_url:
        upgrade(db_url)
        monkeypatch.setenv("MARKETPLACE_DATABASE__URL", db_url)
        monkeypatch.setenv("MARKETPLACE_CACHE__REDIS_URL", redis_url)
        reset_engine()
        s = Setup(db_url, tmp_path, provider, redis_url)
        s.service_id = add_service(provider.url)
        s.new_consumer("consumer-1")
        yield s
        reset_engine()
