"""Shared fixtures: the marketplace database on SQLite and on PostgreSQL, migrated by Alembic."""

from __future__ import annotations

import os

# Short retry delays for the whole suite (and the workers it starts). Delays are read when a try
# fails (tasks/_common.py), so a test may change them later; retry counts are fixed at import.
os.environ.setdefault("MARKETPLACE_RETRIES__BASE_DELAY_SECONDS", "0.05")
os.environ.setdefault("MARKETPLACE_RETRIES__JITTER_FACTOR", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Off by default; the e2e stack turns the opt-in on to check it (in-process apps would make pytest's
# own threads real-time).
os.environ.setdefault("MARKETPLACE_API__REALTIME_PRIORITY", "false")

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from deployments.prefect_compat.client_tls import share_prefect_client_ssl_contexts
from deployments.stack import Stack
from storage.database import reset_engine
from storage.migrate import upgrade
from tests.support.services import require_postgres, temporary_database
from tests.support.stack import prefect_stack
from tests.support.template_copies import TemplateCopies

BACKENDS = ["sqlite", "postgresql"]

# The app builds two Prefect clients at each start, and each loaded the CA bundle again (~30 ms):
# with a few hundred app starts in the suite, that is worth sharing, as the warm worker does.
share_prefect_client_ssl_contexts()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failed test that used a running stack reports what its processes were doing: a dead
    worker or a stuck server shows in the failure, not only as a timeout."""
    report: pytest.TestReport = yield
    if report.failed and call.when == "call":
        funcargs = getattr(item, "funcargs", {})
        for name, value in funcargs.items():
            if isinstance(value, Stack):
                report.sections.append((f"stack {name}: processes and log tails", value.report()))
    return report


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A real Prefect server (on PostgreSQL) with the deployments applied and no worker."""
    with prefect_stack(tmp_path_factory.mktemp("prefect"), with_worker=False, with_api=False) as stack:
        yield stack


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    require_postgres()
    with temporary_database(prefix="mkt_template") as url:
        upgrade(url)
        reset_engine()
        yield make_url(url).database or ""


@pytest.fixture(scope="session")
def postgres_copies(postgres_template: str) -> Iterator[TemplateCopies]:
    """Per-test copies of the template, made ahead and dropped behind on a thread."""
    copies = TemplateCopies(postgres_template)
    yield copies
    copies.close()


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A freshly migrated marketplace database on each backend, configured as the app's database."""
    if request.param == "sqlite":
        path = tmp_path / "marketplace.db"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
    else:
        copies: TemplateCopies = request.getfixturevalue("postgres_copies")
        url = copies.take()
    monkeypatch.setenv("MARKETPLACE_DATABASE__URL", url)
    reset_engine()
    yield url
    reset_engine()
    if request.param == "postgresql":
        copies.give_back(url)
