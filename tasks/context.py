"""The flow context: the settings and the shared objects that flows and their tasks read.

A worker process (and a flow run started in it) builds these once: the settings are read from the
environment on first use, the database engine, the read cache and the search index from those
settings, and all are kept for the life of the process (storage's process-wide objects;
`storage.database.reset_engine()` forgets them all, for tests that change the environment).
Flows and tasks read them here instead of calling `get_settings()` each: this module is the one
place of the pipeline that does.

It lives in `tasks/` (not `flows/`) because tasks read it and may not import flows.
"""

from __future__ import annotations

from sqlalchemy import Engine

from core.settings import Settings, get_settings
from storage.cache import ReadCache, get_cache
from storage.database import get_engine
from storage.search import SearchIndex, get_search_index


class FlowContext:
    """What this process's flows and tasks are handed; one per process (`flow_context()`)."""

    @property
    def settings(self) -> Settings:
        return get_settings()

    @property
    def engine(self) -> Engine:
        return get_engine()

    @property
    def cache(self) -> ReadCache:
        return get_cache()

    @property
    def search_index(self) -> SearchIndex:
        return get_search_index(self.settings)


_CONTEXT = FlowContext()


def flow_context() -> FlowContext:
    """This worker process's context."""
    return _CONTEXT


def settings() -> Settings:
    """Shorthand for `flow_context().settings`."""
    return _CONTEXT.settings
