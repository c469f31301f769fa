"""How gateways hear of key, consumer and access changes: Redis messages and the database stamps."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from storage.cache import get_cache
from storage.consumption_feed import ChangeFeed, announce, key_name, parse_message, read_stamps
from storage.database import get_engine, reset_engine, session_scope
from storage.near_cache import CHANNEL
from storage.repositories import api_keys, consumers
from storage.repositories.api_keys import KeySpec
from storage.repositories.services import Actor
from tests.support.services import REDIS_URL, require_tcp

ADMIN = Actor("root", "admin")
WAIT = 10.0  # generous: a liveness bound for a background thread, not a speed check


class Heard:
    """What a feed told its gateway."""

    def __init__(self) -> None:
        self.calls: list[frozenset[str] | None] = []
        self._event = threading.Condition()

    def __call__(self, names: frozenset[str] | None) -> None:
        with self._event:
            self.calls.append(names)
            self._event.notify_all()

    def wait_for(self, wanted: object) -> None:
        def seen() -> bool:
            return any(c == wanted if wanted is None else (c is not None and wanted in c) for c in self.calls)

        with self._event:
            assert self._event.wait_for(seen, timeout=WAIT), f"never heard {wanted}: {self.calls}"


def a_key() -> str:
    with session_scope() as session:
        consumers.ensure(session, "alice", ADMIN)
        key, _ = api_keys.create(session, "alice", KeySpec("k"), "p" * 40, ADMIN)
        return key.id


def stamps() -> tuple[int, int]:
    with get_engine().connect() as connection:
        return read_stamps(connection)


@pytest.fixture
def far_stamp(database_url: str) -> None:
    """Start the counter somewhere no other test database's is (Redis channels are shared by all)."""
    with session_scope() as session:
        session.execute(
            text("UPDATE cache_stamps SET value = :v WHERE name = 'consumption'"), {"v": random.randrange(10**12)}
        )


def test_messages_carry_names_and_stamps() -> None:
    names, numbers = parse_message(
        b"mkt:generation:service:s1 mkt:consumption:key:k1 mkt:consumption:stamp:42 mkt:search:generation"
    )
    assert names == {"mkt:generation:service:s1", "mkt:consumption:key:k1"} and numbers == {42}


def test_without_redis_a_moved_stamp_drops_everything(far_stamp: None) -> None:
    heard = Heard()
    feed = ChangeFeed(get_engine(), heard, poll_seconds=0.05)
    feed.start()
    try:
        key_id = a_key()
        assert heard.calls == [], "a new key changes nothing a gateway holds"
        with session_scope() as session:
            api_keys.revoke(session, "alice", key_id, None, ADMIN)
        heard.wait_for(None)
    finally:
        feed.close()


def announce_then_fail() -> None:
    with session_scope() as session:
        announce(session, key_name("k"))
        raise RuntimeError("rolled back")


def test_a_rolled_back_change_announces_nothing(far_stamp: None) -> None:
    before = stamps()
    with pytest.raises(RuntimeError):
        announce_then_fail()
    assert stamps() == before


@pytest.fixture
def redis_cache(far_stamp: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    require_tcp("127.0.0.1", 6379, "Redis")
    monkeypatch.setenv("MARKETPLACE_CACHE__REDIS_URL", REDIS_URL)
    reset_engine()
    yield REDIS_URL
    reset_engine()


def test_with_redis_the_change_arrives_by_name(redis_cache: str) -> None:
    heard = Heard()
    feed = ChangeFeed(get_engine(), heard, redis_url=redis_cache, poll_seconds=3600)  # the test polls by hand
    feed.start()
    try:
        heard.wait_for(None)  # subscribed: whatever was held before is dropped once
        assert feed.live
        key_id = a_key()
        heard.calls.clear()
        with session_scope() as session:
            consumers.block(session, "alice", "fraud", ADMIN)
        heard.wait_for("mkt:consumption:consumer:alice")
        with session_scope() as session:
            api_keys.revoke(session, "alice", key_id, None, ADMIN)
        heard.wait_for(key_name(key_id))
        feed.check(stamps())
        feed.check(stamps())
        assert None not in heard.calls, "every stamp's message arrived: nothing else is dropped"
    finally:
        feed.close()


def test_with_redis_a_lost_message_drops_everything_at_the_next_poll(redis_cache: str) -> None:
    heard = Heard()
    feed = ChangeFeed(get_engine(), heard, redis_url=redis_cache, poll_seconds=3600)
    feed.start()
    try:
        heard.wait_for(None)
        heard.calls.clear()
        # A session outside the app's factory: its commit has no listener that publishes.
        with get_engine().begin() as connection, Session(bind=connection) as session:
            announce(session, key_name("lost"))  # the counter moves; no message goes out
        feed.check(stamps())
        assert heard.calls == [], "the message may still be on its way"
        feed.check(stamps())
        assert heard.calls == [None], "by the next poll it is overdue"
    finally:
        feed.close()


def test_the_api_read_cache_ignores_consumption_names(redis_cache: str) -> None:
    cache = get_cache()
    cache.listen()
    near = cache._near
    assert near is not None
    client = redis.Redis.from_url(redis_cache)
    client.publish(CHANNEL, "mkt:consumption:key:abc mkt:consumption:stamp:1")
    client.publish(CHANNEL, "mkt:generation:service:zzz")  # after the first: once it is seen, so was that
    applied = threading.Event()
    for _ in range(200):
        if near._changes.get("mkt:generation:service:zzz"):
            applied.set()
            break
        applied.wait(0.05)
    assert applied.is_set()
    assert not any(k.startswith("mkt:consumption:") for k in near._changes)
