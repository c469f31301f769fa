"""Faults: Redis down, a gateway killed with SIGKILL under load, PostgreSQL unreachable for 30 s,
and the embedded default (no Redis, SQLite). Every call that got an answer has exactly one row."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from core.plans import Plan
from core.settings import PROJECT_ROOT as ROOT
from storage.database import reset_engine
from storage.migrate import upgrade
from storage.repositories import usage as usage_repo
from tests.gateway.conftest import Setup
from tests.gateway.test_proxy import CHAT
from tests.support.gateway import add_service, consumer_with_key
from tests.support.services import CI, free_port
from tests.support.tcp_proxy import TcpProxy

BIG = Plan(name="big", requests_per_minute=1_000_000)


async def load(
    urls: list[str], headers: dict[str, str], seconds: float, workers: int, at: Callable[[float], None] | None = None
) -> tuple[list[str], int]:
    """Calls from `workers` loops over the gateways for `seconds`: request ids answered 200, failures.
    `at(elapsed)` is called between calls (a test's hook to break something mid-run)."""
    answered: list[str] = []
    failures = 0
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:

        async def worker(n: int) -> None:
            nonlocal failures
            i = n
            while (elapsed := time.monotonic() - start) < seconds:
                if at is not None:
                    at(elapsed)
                try:
                    r = await client.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=CHAT, headers=headers)
                except httpx.HTTPError:
                    failures += 1
                else:
                    if r.status_code == 200:
                        answered.append(r.headers["X-Request-ID"])
                    else:
                        failures += 1
                i += 1
                await asyncio.sleep(0)

        await asyncio.gather(*(worker(n) for n in range(workers)))
    return answered, failures


def exactly_once(db_url: str, request_ids: list[str], timeout: float = 60) -> dict[str, int]:
    """How many rows each answered call has, once all are written (or the timeout passed)."""
    engine = create_engine(db_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with Session(engine) as session:
                counts = usage_repo.count_requests(session, request_ids)
            if len(counts) == len(set(request_ids)) or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)
    finally:
        engine.dispose()


def test_a_gateway_killed_under_load_loses_no_record(setup: Setup) -> None:
    setup.new_consumer("consumer-2", BIG)
    a = setup.gateway("gateway-a").start()
    b = setup.gateway("gateway-b").start()
    killed = []

    def kill_a(elapsed: float) -> None:
        if elapsed > 2.0 and not killed:
            killed.append(elapsed)
            a.kill()

    try:
        answered, _ = asyncio.run(load([a.url, b.url], setup.auth, 5.0, 16, kill_a))
        counts = exactly_once(setup.db_url, answered)  # b's writer claims what a read and never stored
    finally:
        b.stop()
    assert killed
    assert len(answered) > 200
    missing = [r for r in answered if r not in counts]
    assert not missing, f"{len(missing)} of {len(answered)} answered calls have no usage row"
    assert set(counts.values()) == {1}


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, Callable[[], subprocess.Popen[bytes]]]]:
    """A redis-server of this test's own (the machine's Redis is shared): its port and a starter."""
    if shutil.which("redis-server") is None:
        (pytest.fail if CI else pytest.skip)("redis-server is not installed")
    port = free_port()
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        argv = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        started.append(proc)
        for _ in range(50):
            try:
                httpx.get(f"http://127.0.0.1:{port}", timeout=0.1)
            except httpx.HTTPError as exc:
                if "refused" not in str(exc).lower():
                    break
            time.sleep(0.1)
        return proc

    yield port, start
    for proc in started:
        proc.kill()
        proc.wait()


def test_with_redis_down_the_gateway_keeps_serving_and_recording(
    setup: Setup, private_redis: tuple[int, Callable[[], subprocess.Popen[bytes]]]
) -> None:
    port, start_redis = private_redis
    redis_proc = start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    setup.new_consumer("consumer-2", Plan(name="limited", requests_per_minute=30))
    gw = setup.gateway(MARKETPLACE_GATEWAY__REDIS_URL=url, MARKETPLACE_CACHE__REDIS_URL=url).start()
    try:
        before = [httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=setup.auth) for _ in range(10)]
        # records in the stream are as durable as that Redis (this one keeps nothing on disk): let
        # the writer store them first, so the test is about what happens once Redis is gone
        exactly_once(setup.db_url, [r.headers["X-Request-ID"] for r in before])
        redis_proc.kill()
        redis_proc.wait()
        started = time.monotonic()
        during = [httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=setup.auth) for _ in range(40)]
        refilled = int((time.monotonic() - started) * 30 / 60)  # the bucket refills 30/min meanwhile
        start_redis()
        time.sleep(3)  # past the retry window: Redis is used again
        after = [httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=setup.auth) for _ in range(3)]
        answered = [r.headers["X-Request-ID"] for r in (*before, *during, *after) if r.status_code == 200]
        counts = exactly_once(setup.db_url, answered)
    finally:
        gw.stop()
    assert all(r.status_code == 200 for r in before)
    codes = [r.status_code for r in during]
    # fail-open to per-process counting: served, and the same limit (30/min) counted in memory
    assert set(codes) <= {200, 429}
    assert 30 <= codes.count(200) <= 30 + refilled
    assert after[0].status_code in (200, 429)
    assert set(counts.values()) == {1}
    assert len(counts) == len(answered)
    journal = setup.workdir / "journal"
    assert not list(journal.glob("*.journal")), "the journal was replayed and removed"


def test_postgres_unreachable_for_30_seconds_loses_no_record(setup: Setup) -> None:
    setup.new_consumer("consumer-2", BIG)
    db = make_url(setup.db_url)
    proxy = TcpProxy(db.host or "127.0.0.1", db.port or 5432).start()
    through_proxy = db.set(port=proxy.port).render_as_string(hide_password=False)
    gw = setup.gateway(MARKETPLACE_DATABASE__URL=through_proxy).start()
    phases: list[str] = []

    def cut_then_restore(elapsed: float) -> None:
        if elapsed > 2 and not phases:
            phases.append("cut")
            proxy.cut()
        elif elapsed > 32 and len(phases) == 1:
            phases.append("restored")
            proxy.restore()

    try:
        answered, failures = asyncio.run(load([gw.url], setup.auth, 36.0, 2, cut_then_restore))
        counts = exactly_once(setup.db_url, answered, timeout=60)
    finally:
        gw.stop()
        proxy.stop()
    assert phases == ["cut", "restored"]
    assert failures == 0, f"{failures} calls failed while the database was away"  # the hot path needs none
    assert len(answered) > 500
    missing = [r for r in answered if r not in counts]
    assert not missing, f"{len(missing)} of {len(answered)} answered calls have no usage row"
    assert set(counts.values()) == {1}


def test_the_embedded_default_serves_one_process_without_redis_on_sqlite(
    tmp_path: Path, provider: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.gateway import GatewayProcess
    from tests.support.llm_provider import LlmProvider

    assert isinstance(provider, LlmProvider)
    db_url = f"sqlite:///{tmp_path / 'marketplace.db'}"
    upgrade(db_url)
    monkeypatch.setenv("MARKETPLACE_DATABASE__URL", db_url)
    monkeypatch.delenv("MARKETPLACE_CACHE__REDIS_URL", raising=False)
    reset_engine()
    service_id = add_service(provider.url)
    _, token = consumer_with_key("solo", [service_id], Plan(name="three", requests_per_minute=3))
    env = {
        "MARKETPLACE_DATABASE__URL": db_url,
        "MARKETPLACE_GATEWAY__JOURNAL_DIR": str(tmp_path / "journal"),
        "MARKETPLACE_GATEWAY__REDIS_URL": "",
        "MARKETPLACE_CACHE__REDIS_URL": "",
    }
    with GatewayProcess(env, tmp_path / "gateway.log") as gw:
        auth = {"Authorization": f"Bearer {token}"}
        codes = [httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=auth).status_code for _ in range(4)]
    reset_engine()
    assert codes == [200, 200, 200, 429]
    engine = create_engine(db_url)
    with Session(engine) as session:
        rows, total = usage_repo.list_records(session, usage_repo.UsageQuery(consumer_id="solo"), 0, 10)
    engine.dispose()
    assert total == 4
    assert sorted(r.status for r in rows) == [200, 200, 200, 429]


def test_a_separate_writer_process_stores_what_the_gateways_hand_off(setup: Setup) -> None:
    """MARKETPLACE_USAGE__INLINE=false: gateways only hand off; `python -m gateway.writer` stores."""
    setup.new_consumer("consumer-2", BIG)  # the default plan's 1000/min is reached in 2 s on a quiet machine
    env = setup.env(MARKETPLACE_USAGE__INLINE="false")
    writer = subprocess.Popen(
        [sys.executable, "-m", "gateway.writer"],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=(setup.workdir / "writer.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        with setup.gateway(MARKETPLACE_USAGE__INLINE="false") as gw:
            answered, failures = asyncio.run(load([gw.url], setup.auth, 2.0, 4))
        counts = exactly_once(setup.db_url, answered)
    finally:
        writer.terminate()
        writer.wait(30)
    assert failures == 0
    assert len(counts) == len(answered) > 50
    assert set(counts.values()) == {1}
