"""How gateway processes learn that keys, consumers, access or credentials changed, within a second.

Gateways keep keys and access in memory (no database read per request). Every transaction that
changes what a gateway holds calls `announce(session, names...)`, which

1. bumps the `consumption` row of `cache_stamps` once per transaction (in the transaction: it
   commits with the change), and
2. after the commit, publishes the names, plus `mkt:consumption:stamp:<new value>`, on the Redis
   channel the read cache already uses for its invalidations (storage/near_cache.CHANNEL), when
   Redis is configured.

Names: `mkt:consumption:key:<key id>`, `mkt:consumption:consumer:<consumer id>`,
`mkt:consumption:access:<consumer id>:<service id>`, `mkt:consumption:service:<service id>`. The
read cache's own `mkt:generation:service:<service id>` on the same channel says a service itself
changed (status, spec); without Redis the `services` stamp moves instead.

`ChangeFeed` is the listening side for a gateway: it calls `on_change(names)` for each message and
`on_change(None)` ("drop everything") when the database stamp moved without the message that
should have come with it (no Redis, a lost message, a dropped subscription).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from storage.database import AFTER_COMMIT, on_commit
from storage.near_cache import CHANNEL, CONSUMPTION_PREFIX

log = logging.getLogger("marketplace.consumption")
STAMP = "consumption"
SERVICES_STAMP = "services"
SERVICE_GENERATION_PREFIX = "mkt:generation:service:"
STAMP_PREFIX = f"{CONSUMPTION_PREFIX}stamp:"
_BUMP = text("UPDATE cache_stamps SET value = value + 1 WHERE name = 'consumption' RETURNING value")
_READ = text("SELECT name, value FROM cache_stamps WHERE name IN ('consumption', 'services')")


def key_name(key_id: str) -> str:
    return f"{CONSUMPTION_PREFIX}key:{key_id}"


def consumer_name(consumer_id: str) -> str:
    return f"{CONSUMPTION_PREFIX}consumer:{consumer_id}"


def access_name(consumer_id: str, service_id: str) -> str:
    return f"{CONSUMPTION_PREFIX}access:{consumer_id}:{service_id}"


def service_name(service_id: str) -> str:
    return f"{CONSUMPTION_PREFIX}service:{service_id}"


class _Announcement:
    """This transaction's names, published once it commits (a callback of storage.database.on_commit,
    so a rollback forgets it with the other callbacks)."""

    def __init__(self, stamp: int) -> None:
        self.stamp = stamp
        self.names: set[str] = set()

    def __call__(self) -> None:
        from storage.cache import get_cache

        get_cache().announce([*sorted(self.names), f"{STAMP_PREFIX}{self.stamp}"])


def announce(session: Session, *names: str) -> None:
    """Record that this transaction changes what gateways hold under `names` (published after commit)."""
    callbacks = session.info.get(AFTER_COMMIT, ())
    pending = next((c for c in callbacks if isinstance(c, _Announcement)), None)
    if pending is None:
        pending = _Announcement(int(session.connection().execute(_BUMP).scalar_one()))
        on_commit(session, pending)
    pending.names.update(names)


def read_stamps(connection: Connection) -> tuple[int, int]:
    """(consumption, services) change counters: one indexed read of two rows."""
    values = dict(connection.execute(_READ).tuples().all())
    return int(values.get(STAMP, 0)), int(values.get(SERVICES_STAMP, 0))


def parse_message(data: bytes | str) -> tuple[frozenset[str], frozenset[int]]:
    """(names a gateway cares about, stamps announced) of one channel message."""
    words = (data.decode() if isinstance(data, bytes) else data).split()
    stamps = frozenset(int(w[len(STAMP_PREFIX) :]) for w in words if w.startswith(STAMP_PREFIX) and w[-1].isdigit())
    names = frozenset(
        w
        for w in words
        if (w.startswith(CONSUMPTION_PREFIX) and not w.startswith(STAMP_PREFIX))
        or w.startswith(SERVICE_GENERATION_PREFIX)
    )
    return names, stamps


class ChangeFeed:
    """A gateway's ear: Redis messages as they arrive, and the database stamps as the safety net.

    `on_change(names)` drops what the names cover; `on_change(None)` drops everything. Without
    Redis every stamp move is a `None`. With Redis, a consumption stamp whose message has not
    arrived by the next poll (lost, or published while Redis was unreachable for the API) is a
    `None` too, as is any moment the subscription is down. So a change reaches every gateway
    within about two poll intervals at worst, and usually within milliseconds.
    """

    def __init__(
        self,
        engine: Engine,
        on_change: Callable[[frozenset[str] | None], None],
        *,
        redis_url: str | None = None,
        poll_seconds: float = 0.25,
    ) -> None:
        self._engine = engine
        self._on_change = on_change
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=2.0) if redis_url else None
        self._poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._heard: set[int] = set()  # consumption stamps whose message arrived
        self._owed: set[int] = set()  # stamps seen in the database whose message had not arrived by then
        self._stamps: tuple[int, int] | None = None
        self._live = False
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def live(self) -> bool:
        """Whether Redis messages are being received (always False without Redis)."""
        return self._live

    def start(self) -> None:
        """Read the stamps now (what is loaded after this is current), then listen in the background."""
        with self._engine.connect() as connection:
            self._stamps = read_stamps(connection)
        targets = [self._poll] + ([self._listen] if self._redis is not None else [])
        for target in targets:
            thread = threading.Thread(target=target, name=f"consumption-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stopped.wait(self._poll_seconds):
            try:
                with self._engine.connect() as connection:
                    stamps = read_stamps(connection)
            except Exception as exc:  # the database is away: what is held stays until it answers
                log.warning("consumption change counter unreadable: %s", exc)
                continue
            self.check(stamps)

    def check(self, stamps: tuple[int, int]) -> None:
        """Compare freshly read stamps with what was heard; drop everything when something was missed."""
        with self._lock:
            previous = self._stamps or stamps
            self._stamps = stamps
            moved = set(range(previous[0] + 1, stamps[0] + 1))
            missed = (moved | self._owed) - self._heard
            overdue = self._owed - self._heard  # owed at the last poll and still not heard
            self._owed = missed - overdue
            self._heard = {s for s in self._heard if s > stamps[0]}
            services_moved = stamps[1] != previous[1]
            # Without Redis the services stamp is the only news of a service change; with it, it stays still.
            drop_all = (not self._live and bool(moved)) or services_moved or bool(overdue)
        if drop_all:
            self._on_change(None)

    def _listen(self) -> None:
        backoff = 0.5
        while not self._stopped.is_set():
            pubsub = self._subscribe()
            if pubsub is None:
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            self._receive_until_lost(pubsub)

    def _subscribe(self) -> Any:
        assert self._redis is not None
        try:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
            pubsub.subscribe(CHANNEL)
            confirmation = pubsub.get_message(timeout=2.0)
        except redis.RedisError as exc:
            log.warning("consumption changes: Redis unavailable, polling the database: %s", exc)
            return None
        if not confirmation or confirmation.get("type") != "subscribe":
            pubsub.close()
            return None
        self._live = True
        self._on_change(None)  # messages may have been missed before this subscription
        return pubsub

    def _receive_until_lost(self, pubsub: Any) -> None:
        while not self._stopped.is_set():
            try:
                message = pubsub.get_message(timeout=0.5)
            except (redis.RedisError, OSError) as exc:
                log.warning("consumption changes: subscription lost, polling the database: %s", exc)
                self._live = False
                self._on_change(None)
                with contextlib.suppress(Exception):
                    pubsub.close()
                return
            if message is not None and message.get("type") == "message":
                self.receive(message["data"])
        pubsub.close()

    def receive(self, data: bytes | str) -> None:
        """Apply one channel message."""
        names, stamps = parse_message(data)
        with self._lock:
            self._heard.update(stamps)
        if names:
            self._on_change(names)
