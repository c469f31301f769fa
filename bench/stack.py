"""The stack the benchmarks run against, and how they read CPU time.

As in production (README, "Running in production"): the Prefect server on PostgreSQL with its
messaging on Redis (the API server and the niced background services in two processes), the
warm worker, the API with its read cache on Redis. Both Redis databases are emptied first: a
stream or consumer group left by an earlier stack must not be replayed into this one. Every
part listens on a free loopback port and logs to `<workdir>/logs`.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deployments.stack import Stack  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.support.services import temporary_database  # noqa: E402
from tests.support.stack import prefect_stack  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
CACHE_REDIS = "redis://127.0.0.1:6379/14"  # not the tests' databases (they flush theirs)
PREFECT_REDIS = "redis://127.0.0.1:6379/13"
PROBLEMS = re.compile(r"database is locked|too many clients|Traceback|\bERROR\b|\| ERROR ")


def export_revision(revision: str, into: Path) -> Path:
    """The files of `revision` (this repository's git), unpacked under `into`."""
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


@contextlib.contextmanager
def started(argv: list[str], root: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` run in `root` with the code there first on the path, its output appended to `log`;
    terminated (killed after 30 s) on exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=root, env={**env, "PYTHONPATH": str(root)}, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fresh_redis(url: str) -> str:
    redis.Redis.from_url(url).flushdb()
    return url


@contextlib.contextmanager
def bench_stack(
    workdir: Path,
    *,
    worker: str = "warm",
    prefect_redis: str | None = PREFECT_REDIS,
    cache_redis: str | None = CACHE_REDIS,
    problems: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[Stack, str]]:
    """The running stack and its marketplace database URL. `prefect_redis=None`: the Prefect
    server in one process with in-memory messaging; `cache_redis=None`: the in-process cache.
    On exit, the problem lines of every part's log are appended to `problems`."""
    with temporary_database(prefix="mkt_bench") as app_db:
        upgrade(app_db)
        env = {
            "MARKETPLACE_DATABASE__URL": app_db,
            "MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS": "true",
            "MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT": "100000",  # a benchmark is one client publishing a lot
            "MARKETPLACE_WORKER__MODE": worker,
        }
        if cache_redis:
            env["MARKETPLACE_CACHE__REDIS_URL"] = fresh_redis(cache_redis)
        if prefect_redis:
            env["MARKETPLACE_PREFECT__REDIS_URL"] = fresh_redis(prefect_redis)
        env.update(extra_env or {})
        with prefect_stack(workdir, with_worker=True, with_api=True, env=env) as stack:
            yield stack, app_db
        if problems is not None:
            for log_file in sorted((workdir / "logs").glob("*.log")):
                lines = log_file.read_text(errors="replace").splitlines()
                problems.extend(f"{log_file.name}: {line}" for line in lines if PROBLEMS.search(line))


def own_stack_or_running(
    api_url: str | None, workdir: str | None, prefix: str, **stack_options: Any
) -> contextlib.AbstractContextManager[tuple[Stack | None, str | None]]:
    """`bench_stack` in `workdir` (a new temporary one when None), or nothing to start when the
    benchmark measures a stack already running at `api_url` (then it yields (None, None))."""
    if api_url:
        return contextlib.nullcontext((None, None))
    return bench_stack(Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=prefix)), **stack_options)


def describe(worker: str, prefect_redis: str | None, cache_redis: str | None) -> str:
    messaging = "on Redis (API server and niced services split)" if prefect_redis else "in memory (one process)"
    cache = "Redis" if cache_redis else "in-process"
    return f"{worker} worker, Prefect messaging {messaging}, cache {cache}"


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of a process onto `cpus` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), cpus)


def api_on_its_own_cpu(stack: Stack) -> str:
    """The API alone on the last CPU, every other part the stack started (and this process, whose
    children generate the load) on the others: the API with CPU of its own, as production gives it.
    PostgreSQL and Redis are the machine's services and are left where the kernel puts them."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--api-placement own-cpu needs at least 2 CPUs")
    api_cpu, rest = {cpus[-1]}, set(cpus[:-1])
    for name, proc in stack.processes:
        pin(proc.pid, api_cpu if name == "api" else rest)
    pin(os.getpid(), rest)
    return f"API pinned to CPU {cpus[-1]}, the other parts and the load generator to CPU(s) {sorted(rest)}"


def cpu_seconds(pid: int) -> float:
    """CPU of a process and its reaped children (utime + stime + cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time of the whole machine (every core, every process: PostgreSQL, Redis, the benchmark too)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:8]  # user nice system idle iowait irq softirq
    return sum(int(f) for i, f in enumerate(fields) if i not in (3, 4)) / os.sysconf("SC_CLK_TCK")
