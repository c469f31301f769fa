"""Sessions. Whoever opens a session commits it; repositories only flush.

A commit that changed services invalidates the read cache (storage/cache.py) for every process.
Engines are storage/engine.py's (re-exported here for the modules that import them from here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings
from storage.cache import get_cache
from storage.engine import (
    CONNECT_TIMEOUT_SECONDS,
    build_engine,
    dispose_stamp_engine,
    get_engine,
    get_read_engine,
    read_change_stamp,
)

__all__ = [
    "AFTER_COMMIT",
    "CHANGED",
    "CONNECT_TIMEOUT_SECONDS",
    "build_engine",
    "get_engine",
    "mark_services_changed",
    "on_commit",
    "read_change_stamp",
    "read_scope",
    "reset_engine",
    "session_scope",
]


@lru_cache(maxsize=1)
def _session_factory() -> sessionmaker[Session]:
    factory = sessionmaker(bind=get_engine(), expire_on_commit=False)
    event.listen(factory, "after_flush", _collect_changed_services)
    event.listen(factory, "after_commit", _invalidate_cache)
    event.listen(factory, "after_commit", _run_commit_callbacks)
    event.listen(factory, "after_rollback", _forget_pending)
    return factory


CHANGED = "changed_service_ids"
_CACHE_STAMP_BUMP = text("UPDATE cache_stamps SET value = value + 1 WHERE name = 'services'")


def _collect_changed_services(session: Session, _context: Any) -> None:
    """Remember which services this transaction touched; bump the change stamp once for other processes."""
    from storage.models import FlowRunRequest, SearchDocument, Service, ServiceVersion

    touched: set[str] = set()
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Service):
            touched.add(obj.id)
        elif isinstance(obj, ServiceVersion | SearchDocument | FlowRunRequest):  # a queued run is in the status
            touched.add(obj.service_id or "")
    touched.discard("")
    mark_services_changed(session, touched)


def mark_services_changed(session: Session, service_ids: Iterable[str]) -> None:
    """Invalidate as the flush listener does, for Core statements it cannot see (bulk upserts, deletes)."""
    changed: set[str] = session.info.setdefault(CHANGED, set())
    before = len(changed)
    changed.update(service_ids)
    if before == 0 and changed and not get_cache().shared:
        session.connection().execute(_CACHE_STAMP_BUMP)


def _invalidate_cache(session: Session) -> None:
    changed = session.info.pop(CHANGED, None)
    if changed:
        get_cache().invalidate(changed)


AFTER_COMMIT = "after_commit_callbacks"


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Call `callback` once this session's transaction has committed (never if it rolls back)."""
    callbacks: list[Callable[[], None]] = session.info.setdefault(AFTER_COMMIT, [])
    if callback not in callbacks:
        callbacks.append(callback)


def _run_commit_callbacks(session: Session) -> None:
    for callback in session.info.pop(AFTER_COMMIT, ()):
        callback()


def _forget_pending(session: Session) -> None:
    session.info.pop(CHANGED, None)
    session.info.pop(AFTER_COMMIT, None)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    session = _session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@lru_cache(maxsize=1)
def _read_session_factory() -> sessionmaker[Session]:
    factory = sessionmaker(bind=get_read_engine(), expire_on_commit=False)
    event.listen(factory, "before_flush", _refuse_writes)
    return factory


def _refuse_writes(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("a read_scope session cannot write: use session_scope")


@contextmanager
def read_scope() -> Iterator[Session]:
    """A session that only reads: one snapshot, ended without committing anything.

    On SQLite it does not queue behind this process's writers (storage/engine.py,
    get_read_engine), so searches run side by side and never hold up a publication.
    """
    session = _read_session_factory()()
    try:
        yield session
    finally:
        session.close()  # rolls the read transaction back


def reset_engine() -> None:
    """Forget the cached engine and settings (after the configuration changed, e.g. in tests)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    dispose_stamp_engine()
    get_engine.cache_clear()
    _session_factory.cache_clear()
    _read_session_factory.cache_clear()
    get_settings.cache_clear()
    get_cache.cache_clear()
