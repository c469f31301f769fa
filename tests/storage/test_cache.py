"""The read cache: Redis and in-process, invalidated by commits, even commits of other processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from core.settings import CacheSettings
from storage.cache import LocalBackend, ReadCache, RedisBackend, SearchEntry, get_cache
from storage.database import reset_engine, session_scope
from storage.engine import read_change_stamp
from storage.repositories import services
from storage.repositories.services import Actor
from tests.support.services import REDIS_URL, require_tcp
from tests.support.specs import make_spec


@pytest.fixture(params=["local", "redis"])
def cache_mode(request: pytest.FixtureRequest, database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "redis":
        require_tcp("127.0.0.1", 6379, "Redis")
        RedisBackend(REDIS_URL)._redis.flushdb()
        monkeypatch.setenv("MARKETPLACE_CACHE__REDIS_URL", REDIS_URL)
    reset_engine()
    return str(request.param)


def create_service() -> str:
    with session_scope() as session:
        return services.create_submitted(session, make_spec(), Actor("acme")).id


def test_local_backend_expires_and_bounds() -> None:
    backend = LocalBackend(max_entries=2)
    backend.set("a", "1", ttl=60)
    backend.set("b", "2", ttl=60)
    backend.set("c", "3", ttl=60)
    assert backend.get("a") is None, "least recently used entry evicted"
    backend.set("short", "x", ttl=1)
    time.sleep(1.05)
    assert backend.get("short") is None
    assert backend.incr("n") == 1
    assert backend.incr("n") == 2


def cached_service(service_id: str) -> dict[str, object] | None:
    cache = get_cache()
    return cache.get_service(service_id, cache.service_token(service_id))


def test_a_commit_invalidates_the_service_and_all_searches(cache_mode: str) -> None:
    service_id = create_service()
    cache = get_cache()
    cache.put_service(service_id, cache.service_token(service_id), {"description": "old"})
    cache.put_search("q1", cache.search_token(), '{"total":1}')
    assert cached_service(service_id) == {"description": "old"}
    assert cache.get_search("q1", cache.search_token()) == SearchEntry(body='{"total":1}', fresh=True)
    with session_scope() as session:
        services.get(session, service_id).description = "new"
    assert cached_service(service_id) is None
    assert cache.get_search("q1", cache.search_token()) is None


def test_data_loaded_before_a_change_committed_is_never_served_after_it(cache_mode: str) -> None:
    """The reader took its token, loaded the old row, then a change committed, then it stored."""
    service_id = create_service()
    cache = get_cache()
    token = cache.service_token(service_id)
    stale = {"description": "loaded before the change"}
    with session_scope() as session:
        services.get(session, service_id).description = "changed meanwhile"
    cache.put_service(service_id, token, stale)
    assert cached_service(service_id) is None


def change_then_fail(service_id: str) -> None:
    with session_scope() as session:
        services.get(session, service_id).description = "never committed"
        session.flush()
        raise RuntimeError("abort")


def test_a_rolled_back_change_keeps_the_entry(cache_mode: str) -> None:
    service_id = create_service()
    get_cache().put_service(service_id, get_cache().service_token(service_id), {"description": "kept"})
    with pytest.raises(RuntimeError):
        change_then_fail(service_id)
    assert cached_service(service_id) == {"description": "kept"}


def test_a_change_made_by_another_process_is_seen_on_the_next_read(cache_mode: str, database_url: str) -> None:
    service_id = create_service()
    cache = get_cache()
    cache.put_service(service_id, cache.service_token(service_id), {"description": "before"})
    script = (
        "from storage.database import session_scope\n"
        "from storage.repositories import services\n"
        f"with session_scope() as s: services.get(s, {service_id!r}).description = 'changed elsewhere'\n"
    )
    env = {**os.environ, "MARKETPLACE_DATABASE__URL": database_url}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)
    assert cached_service(service_id) is None


def test_redis_down_degrades_to_no_cache() -> None:
    dead = ReadCache(RedisBackend("redis://127.0.0.1:1/0"), CacheSettings(), stamp=None)
    dead.put_service("s", dead.service_token("s"), {"x": 1})
    assert dead.get_service("s", dead.service_token("s")) is None
    dead.invalidate(["s"])


def test_a_search_answer_past_its_ttl_is_stale_then_gone(cache_mode: str) -> None:
    """Fresh for the TTL, answered stale for the window after it, then a miss (memory included)."""
    settings = CacheSettings(search_ttl_seconds=1, search_stale_seconds=1)
    near = None
    if cache_mode == "redis":
        backend = RedisBackend(REDIS_URL)
        near = backend.near_cache()
        cache = ReadCache(backend, settings, stamp=None, near=near)
        cache.listen()
    else:
        cache = ReadCache(LocalBackend(), settings, stamp=read_change_stamp)
    try:
        token = cache.search_token()
        cache.put_search("q", token, "{}")
        assert cache.get_search("q", token) == SearchEntry(body="{}", fresh=True)
        time.sleep(1.05)
        assert cache.get_search("q", token) == SearchEntry(body="{}", fresh=False)
        time.sleep(1.0)
        assert cache.get_search("q", token) is None
    finally:
        if near is not None:
            near.close()
