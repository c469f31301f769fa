"""The Redis cache's tokens and entries in process memory, invalidated by pub/sub (storage/near_cache.py).

Against a redis-server of the test's own: its command counters tell what reached Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis

from core.settings import CacheSettings
from storage.cache import NO_TOKEN, ReadCache, RedisBackend
from tests.faults.helpers import RedisServer

RECORD = {"serviceId": "s1", "status": "testing"}
STATUS = "status"  # the kind of entry the status view keeps (api/status/view.py)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as redis_server:
        yield redis_server


def api_cache(url: str) -> ReadCache:
    """As the API builds it (storage/cache.py get_cache)."""
    backend = RedisBackend(url)
    return ReadCache(backend, CacheSettings(redis_url=url), stamp=None, near=backend.near_cache())


def worker_cache(url: str) -> ReadCache:
    """Another process (a worker) that only invalidates."""
    return api_cache(url)


def gets(server: RedisServer) -> int:
    """GET commands the server has run so far."""
    stats = redis.Redis.from_url(server.url).info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


def live_token(cache: ReadCache, service_id: str) -> str:
    """The token once the subscription is up (memory is trusted from then on)."""
    deadline = time.monotonic() + 10
    while cache.peek_entry(STATUS, service_id) is None:
        token = cache.service_token(service_id)
        cache.put_entry(STATUS, service_id, token, RECORD)
        assert time.monotonic() < deadline, "the invalidation feed never came up"
        time.sleep(0.02)
    return cache.service_token(service_id)


def eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.005)


def test_a_change_made_by_this_process_is_seen_at_once(server: RedisServer) -> None:
    api = api_cache(server.url)
    token = live_token(api, "s1")
    api.invalidate(["s1"])
    assert api.peek_entry(STATUS, "s1") is None
    assert api.service_token("s1") != token


def test_a_held_report_costs_redis_nothing_and_another_process_change_is_seen_next(server: RedisServer) -> None:
    api, worker = api_cache(server.url), worker_cache(server.url)
    token = live_token(api, "s1")
    before = gets(server)
    for _ in range(50):
        assert api.get_entry(STATUS, "s1", api.service_token("s1")) == RECORD
        assert api.peek_entry(STATUS, "s1") == RECORD
    assert gets(server) == before, "served from memory"

    worker.invalidate(["s1"])  # a commit in another process: INCR, then PUBLISH
    eventually(lambda: api.peek_entry(STATUS, "s1") is None, "the change heard of")
    changed = api.service_token("s1")
    assert changed != token
    assert api.get_entry(STATUS, "s1", changed) is None


def test_a_lost_subscription_falls_back_to_redis_and_misses_no_change(server: RedisServer) -> None:
    api, worker = api_cache(server.url), worker_cache(server.url)
    token = live_token(api, "s1")
    admin = redis.Redis.from_url(server.url)
    admin.client_kill_filter(_type="pubsub")  # the feed drops ...
    eventually(lambda: api.peek_entry(STATUS, "s1") is None, "memory no longer trusted without the feed")
    worker.invalidate(["s1"])  # ... and this change's message reaches no one
    assert api.peek_entry(STATUS, "s1") is None
    assert api.service_token("s1") != token, "read from Redis instead"


def test_redis_down_means_no_token_and_nothing_kept(server: RedisServer) -> None:
    api = api_cache(server.url)
    live_token(api, "s1")
    server.stop()
    assert api.service_token("s1") == NO_TOKEN
    assert api.peek_entry(STATUS, "s1") is None
    api.put_entry(STATUS, "s1", NO_TOKEN, {"stale": True})
    assert api.get_entry(STATUS, "s1", NO_TOKEN) is None


def test_reading_unknown_ids_keeps_nothing_and_a_reset_still_moves_every_version(server: RedisServer) -> None:
    backend = RedisBackend(server.url)
    near = backend.near_cache()
    api = ReadCache(backend, CacheSettings(redis_url=server.url), stamp=None, near=near)
    live_token(api, "s1")
    before = api.change_version("s1")
    for n in range(1000):  # a client polling ids that do not exist
        api.change_version(f"no-such-service-{n}")
        api.peek_entry(STATUS, f"no-such-service-{n}")
    assert len(near._changes) <= 1, "only generations that changed are counted"
    near.reset()  # Redis failed for this process: whatever was in flight may be stale
    eventually(lambda: api.change_version("s1") is not None, "trusted again")
    assert api.change_version("s1") != before
    assert api.change_version("no-such-service-1") != 0
