"""Engines: one per process for the configured database, tuned per backend; the cache's change stamp.

Nothing here knows about sessions or the read cache: storage/cache.py reads the change stamp from
here, and storage/database.py (sessions) builds on both, so imports point one way.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from core.settings import get_settings

CONNECT_TIMEOUT_SECONDS = 10


def build_engine(
    url: str,
    pool_size: int = 10,
    max_overflow: int = 20,
    echo: bool = False,
    connect_timeout: int = CONNECT_TIMEOUT_SECONDS,
) -> Engine:
    """An engine tuned for the backend: WAL and a busy timeout on SQLite, a pool on PostgreSQL.

    On PostgreSQL every checkout is pre-pinged, so connections the server dropped (a restart,
    a failover, an administrator's pg_terminate_backend) are replaced instead of failing the
    next statement; a statement that loses its connection mid-flight raises OperationalError
    and the task running it is retried. A new connection gives up after `connect_timeout`
    seconds (unless the URL says otherwise) rather than hanging on an unreachable server.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})
        gate = _WriterGate()
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", gate.begin)
        event.listen(engine, "commit", gate.end)
        event.listen(engine, "rollback", gate.end)
        return engine
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": connect_timeout}
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The pysqlite driver opens transactions lazily, only before DML, so a SAVEPOINT issued
    # first runs in autocommit and its RELEASE commits: take transaction control ourselves.
    dbapi_connection.isolation_level = None
    # WAL lets readers proceed while a flow writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class _WriterGate:
    """One transaction at a time per process on SQLite, queued in Python, each beginning IMMEDIATE.

    IMMEDIATE takes SQLite's write lock up front: a deferred transaction that reads and then writes
    gets SQLITE_BUSY at once (no busy wait) when another writer got there first. Threads of this
    process then wait for each other here, woken the moment the transaction before them ends,
    instead of in SQLite's busy handler, which polls with sleeps of up to 100 ms: with 50
    submissions at once the handler's polling doubled the slowest answers (p95 ~450 ms against
    ~240 ms queued here). Other processes (the worker) still meet this one in the busy handler.
    """

    WAIT_SECONDS = 30.0  # as SQLite's busy timeout

    def __init__(self) -> None:
        self._turn = threading.Semaphore(1)  # not a lock: a request's session may end on another thread

    def begin(self, connection: Connection) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            # A reader needs no turn: in WAL mode it reads a snapshot while a writer writes.
            # BEGIN (deferred) still makes its statements one consistent snapshot.
            connection.exec_driver_sql("BEGIN")
            return
        if not self._turn.acquire(timeout=self.WAIT_SECONDS):
            raise TimeoutError(f"no turn to write to SQLite within {self.WAIT_SECONDS:g} s")
        connection.info[_HOLDS_TURN] = True
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self.end(connection)
            raise

    def end(self, connection: Connection) -> None:
        if connection.info.pop(_HOLDS_TURN, False):
            self._turn.release()


_HOLDS_TURN = "holds_sqlite_writer_turn"
READ_ONLY = "marketplace_read_only"  # an execution option: see get_read_engine


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process-wide engine for the configured database."""
    db = get_settings().database
    return build_engine(db.url, db.pool_size, db.max_overflow, db.echo)


def get_read_engine() -> Engine:
    """The process-wide engine for transactions that only read (the same pool), each one snapshot.

    On SQLite they do not queue for the process's writer turn (see `_WriterGate`): a search or a
    cache's change-stamp read then never waits behind a publication's writes, nor they behind it.
    On PostgreSQL its transactions are REPEATABLE READ. Writing through it on SQLite could fail
    with "database is locked" instead of waiting: sessions on it refuse to flush
    (storage/database.py, read_scope).
    """
    return _read_engine(get_engine())


@lru_cache(maxsize=1)
def _read_engine(engine: Engine) -> Engine:
    if engine.dialect.name == "postgresql":
        # One snapshot for the whole transaction (a search's page, total and facets agree), as a
        # deferred BEGIN gives on SQLite; a transaction that only reads never fails to serialize.
        return engine.execution_options(isolation_level="REPEATABLE READ", **{READ_ONLY: True})
    return engine.execution_options(**{READ_ONLY: True})


STAMP_QUERY = "SELECT value FROM cache_stamps WHERE name = 'services'"


def read_change_stamp() -> int:
    """The database's change counter: one primary-key read, on every cached read of the API.

    It has connections of its own, in autocommit, neither pinged nor rolled back around the read:
    through the main pool (ping, BEGIN, SELECT, ROLLBACK) it cost ~330 µs of CPU and three round
    trips on PostgreSQL, ~80 µs and the SQLite writers' queue on SQLite; this way ~60 µs and one
    round trip, ~10 µs. A connection the server dropped fails its read: it is discarded and the
    read made once more on a new one.
    """
    engine = change_stamp_engine()
    for attempt in (1, 2):
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(STAMP_QUERY)
            row = cursor.fetchone()
            cursor.close()
        except engine.dialect.loaded_dbapi.Error:
            connection.invalidate()  # not returned to the pool
            if attempt == 2:
                raise
            continue
        else:
            connection.close()
        if row is None:
            raise LookupError("cache_stamps has no 'services' row: is the database migrated?")
        return int(row[0])
    raise AssertionError("unreachable")


def change_stamp_engine() -> Engine:
    """The engine read_change_stamp reads on (its reads bypass statement events: tests count its
    pool's checkouts, one per read)."""
    return _stamp_engine(get_engine())


def _stamp_engine(engine: Engine) -> Engine:
    """A small autocommit pool beside `engine` (made on first use, replaced with it), for read_change_stamp."""
    global _stamp
    with _stamp_lock:
        if _stamp is None or _stamp[0] is not engine:
            if _stamp is not None:
                _stamp[1].dispose()
            stamp_engine = create_engine(
                engine.url,
                isolation_level="AUTOCOMMIT",
                pool_size=4,
                max_overflow=8,
                pool_pre_ping=False,
                pool_reset_on_return=None,
                connect_args=_stamp_connect_args(engine),
            )
            _stamp = (engine, stamp_engine)
        return _stamp[1]


def _stamp_connect_args(engine: Engine) -> dict[str, Any]:
    if engine.dialect.name == "sqlite":
        return {"timeout": 30, "check_same_thread": False}
    return {} if "connect_timeout" in engine.url.query else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}


_stamp: tuple[Engine, Engine] | None = None
_stamp_lock = threading.Lock()


def dispose_stamp_engine() -> None:
    """Close the stamp reader's connections (when the main engine is reset)."""
    global _stamp
    with _stamp_lock:
        if _stamp is not None:
            _stamp[1].dispose()
        _stamp = None
