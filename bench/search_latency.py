"""Search latency of the SQL backend with 10,000 and then 100,000 synthetic services.

    .venv/bin/python bench/search_latency.py [--sizes 10000 100000] [--repeats 30]
        [--backends postgresql sqlite] [--clients 50] [--seconds 10] [--no-record]
        [--json FILE] [--before FILE | --no-compare]
        [--http yes|no|only] [--http-base REV] [--http-rounds 2] [--http-seconds 40]

PostgreSQL runs in a temporary database (dropped afterwards), SQLite in a temporary file; both
are migrated by Alembic. Services and their search documents are bulk-inserted (multi-row
INSERTs of 1,000, one transaction per 5,000), then a fixed mix of queries runs `--repeats` times
each, one at a time, timed around `SearchIndex.search` (SQL, facets and building the page).
Prints p50/p99 per query and overall, and appends the table to bench/RESULTS.md.

Then `--clients` threads search at once for `--seconds`, each sending its next query as soon as
its last one answered: all the broad one-word query with facets ("chat", three quarters of the
catalogue), then each cycling through the ten most frequent words (17,000-76,000 matches each,
client n starting at the n-th word, so that the clients do not all ask the same thing); each
straight to the backend (every query does the whole work), then through what the API route calls
(`api.routes.search.run_search`: the result cache, in-process, 30 s TTL, and one run per
identical query in flight).

Then over HTTP, what a user of `make up` meets: the API started as `make up` starts it (one
uvicorn process, the in-process result cache with its 30 s TTL), alone on the benchmark's
database, and `--clients` keep-alive connections (bench/loadgen.py, `closed_loop`) each sending its
next search as soon as its last was answered, for the same two cases. A new API process (an empty
cache) per round; each round runs this code's API and then `--http-base`'s (a `git archive` of that
revision, default `main`), so both meet the same machine; the rows are medians of the rounds. A
round of 40 s sees the cache cold (its first 2 s, also reported without) and the TTL pass once.

When the schema has `service_signals` (migration 0011), 70 % of the services get figures
(Zipf-distributed calls, availability, latency) so that the signal facets, filters and sorts have
something to count. `--json` writes the figures; `--before FILE` puts such an earlier run's
figures beside this one's (the same script run against the code before a change). Without
`--before`, every measurement is also made, in the same run and on the same data, with the SQL
backend ranking every match of a broad query (`RANK_WINDOW = None`, as before the rank window):
the "before" columns, the single queries interleaved with the windowed ones (`--no-compare`: not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, inspect, text

from core.errors import SpecValidationError
from storage.database import get_engine, reset_engine
from storage.migrate import upgrade
from storage.models import Service
from storage.search import SearchDocumentIn, SearchIndex, SearchPage, SearchQuery, get_search_index
from tests.support.services import temporary_database

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
CHUNK = 5_000
T0 = datetime(2025, 1, 1, tzinfo=UTC)
REAL_WORDS = [
    *("chat", "model", "translation", "summaries", "code", "image", "speech", "fast", "secure", "enterprise"),
    *("legal", "medical", "finance", "multilingual", "assistant", "embedding", "search", "vision", "audio"),
    *("realtime", "reasoning", "retrieval", "contracts", "support", "customer", "agent", "documents"),
    *("classification", "moderation", "sentiment", "extraction", "compliance", "private", "tuned"),
]
CATEGORIES = ["text-generation", "chat", "embeddings", "code-generation", "image-generation", "speech-to-text"]
CATEGORIES += ["text-to-speech", "translation", "summarization", "classification", "moderation", "other"]
PRICING = ["free", "per-token", "per-request", "subscription"]
COMPLIANCE = ["public", "internal", "confidential", "restricted"]


class Corpus:
    """Deterministic synthetic catalogue: Zipf-distributed words, so some terms are everywhere."""

    def __init__(self, seed: int = 42) -> None:
        self.rng = random.Random(seed)
        syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
        pseudo = {"".join(self.rng.choices(syllables, k=self.rng.randint(2, 4))) for _ in range(6000)}
        self.words = REAL_WORDS + sorted(pseudo - set(REAL_WORDS))
        self.word_weights = _cumulative(len(self.words))
        self.tags = [f"tag-{n}" for n in range(150)]
        self.tag_weights = _cumulative(len(self.tags))
        self.signal_rng = random.Random(seed + 1)  # its own stream: the catalogue stays as it was

    def signals(self, service_id: str) -> dict[str, Any] | None:
        return _signals(self.signal_rng, service_id)

    def rows(self, start: int, count: int) -> Iterator[tuple[dict[str, Any], SearchDocumentIn]]:
        rng = self.rng
        for n in range(start, start + count):
            words = rng.choices(self.words, cum_weights=self.word_weights, k=rng.randint(12, 30))
            name = f"{rng.choice(self.words)}-{rng.choice(self.words)}-{n}"
            tags = sorted(set(rng.choices(self.tags, cum_weights=self.tag_weights, k=rng.randint(2, 5))))
            status = rng.choices(["active", "deprecated", "retired"], weights=[85, 10, 5])[0]
            published = T0 + timedelta(seconds=rng.randint(0, 2 * 365 * 86400))
            service_id = f"00000000-0000-4000-8000-{n:012d}"
            provider = f"prov-{rng.randint(0, 1999)}"
            document = SearchDocumentIn(
                service_id=service_id,
                name=name,
                version="1.0.0",
                description=" ".join(words).capitalize() + ".",
                category=rng.choice(CATEGORIES),
                tags=tags,
                provider_id=provider,
                provider_name=provider.title(),
                pricing_model=rng.choice(PRICING),
                compliance_level=rng.choice(COMPLIANCE),
                status=status,
                published_at=published,
            )
            yield _service_row(document), document


def _signals(rng: random.Random, service_id: str) -> dict[str, Any] | None:
    if rng.random() < 0.3:  # never called, never observed
        return None
    p50 = rng.lognormvariate(5.5, 0.6)  # ~250 ms median
    return {
        "service_id": service_id,
        "calls_30d": int(rng.paretovariate(1.1) * 10) - 10,
        "availability": round(min(100.0, 100 - rng.expovariate(1.5)), 3),
        "latency_p50_ms": round(p50, 1),
        "latency_p95_ms": round(p50 * rng.uniform(1.5, 4), 1),
        "updated_at": T0,
    }


def _cumulative(size: int) -> list[float]:
    total, out = 0.0, []
    for rank in range(size):
        total += 1.0 / (rank + 1)
        out.append(total)
    return out


def _service_row(document: SearchDocumentIn) -> dict[str, Any]:
    return {
        "id": document.service_id,
        "name": document.name,
        "version": document.version,
        "description": document.description,
        "provider_id": document.provider_id,
        "provider_name": document.provider_name,
        "category": document.category,
        "tags": document.tags,
        "spec": {"name": document.name, "version": document.version},
        "status": document.status,
        "created_at": document.published_at,
        "updated_at": document.published_at,
        "published_at": document.published_at,
    }


def load(index: SearchIndex, corpus: Corpus, start: int, count: int) -> float:
    """Insert services [start, start + count) and index them; returns the seconds it took."""
    began = time.perf_counter()
    rows = corpus.rows(start, count)
    signals = inspect(get_engine()).has_table("service_signals")
    for offset in range(0, count, CHUNK):
        batch = [next(rows) for _ in range(min(CHUNK, count - offset))]
        with get_engine().begin() as connection:
            connection.execute(insert(Service), [service for service, _ in batch])
            if signals:
                figures = [corpus.signals(service["id"]) for service, _ in batch]
                connection.execute(
                    text(
                        "INSERT INTO service_signals (service_id, calls_30d, availability, latency_p50_ms, "
                        "latency_p95_ms, updated_at) VALUES (:service_id, :calls_30d, :availability, "
                        ":latency_p50_ms, :latency_p95_ms, :updated_at)"
                    ),
                    [f for f in figures if f is not None],
                )
        index.index_many(document for _, document in batch)
    return time.perf_counter() - began


BROAD = "text, common word"
# The ten most frequent words of the catalogue: each matches 17,000-76,000 of 100,000 services.
BROAD_WORDS = REAL_WORDS[:10]
VARIED = "text, one of 10 common words"


def queries(corpus: Corpus) -> list[tuple[str, SearchQuery]]:
    """The mix; a query the code under test refuses (a sort or filter it does not have yet) is left out."""
    rare = corpus.words[3000]
    mix: list[tuple[str, dict[str, Any]]] = [
        (BROAD, {"text": "chat"}),
        ("text, rare word", {"text": rare}),
        ("text, two words", {"text": "fast translation"}),
        ("text + category + pricing", {"text": "assistant", "filters": {"category": "chat", "pricing_model": "free"}}),
        ("text + 2 tags", {"text": "model", "filters": {"tags": ["tag-0", "tag-1"]}}),
        ("text, sort by name", {"text": "secure", "sort": "name"}),
        (
            "filters only (category + compliance)",
            {"filters": {"category": "embeddings", "compliance_level": "internal"}},
        ),
        ("filter: provider", {"filters": {"provider_id": "prov-7"}}),
        ("filter: 1 tag", {"filters": {"tags": ["tag-3"]}}),
        ("browse all (newest), page 1", {"include_deprecated": True}),
        ("browse all, offset 5000", {"pagination": {"offset": 5000, "limit": 20}}),
        ("text, offset 2000", {"text": "model", "pagination": {"offset": 2000, "limit": 20}}),
        ("text, sort by popularity", {"text": "chat", "sort": "popularity"}),
        (
            "text + min availability + max latency",
            {"text": "model", "filters": {"min_availability": 99.5, "max_latency_ms": 500}},
        ),
        ("browse, min calls, sort by availability", {"filters": {"min_calls_30d": 100}, "sort": "availability"}),
    ]
    built = []
    for label, fields in mix:
        try:
            built.append((label, SearchQuery(**fields)))
        except SpecValidationError:
            continue
    return built  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


def measure(
    index: SearchIndex, mix: list[tuple[str, SearchQuery]], repeats: int, windows: list[Any]
) -> list[dict[str, list[float]]]:
    """Each query of the mix `repeats` times under each rank window; samples per window, per query."""
    samples: list[dict[str, list[float]]] = [{label: [] for label, _ in mix} for _ in windows]
    for window in windows:
        with rank_window(window):
            for _, query in mix:
                for _warm_up in range(2):  # warm caches and the connection pool
                    index.search(query)
    for _ in range(repeats):  # interleaved, so a noisy moment spreads over every query and window
        for label, query in mix:
            for mine, window in zip(samples, windows, strict=True):
                with rank_window(window):
                    began = time.perf_counter()
                    index.search(query)
                    mine[label].append((time.perf_counter() - began) * 1000)
    return samples


ALL = "all"  # rank every match: the SQL backend before its rank window


@contextmanager
def rank_window(window: Any) -> Iterator[None]:
    """The SQL backend's RANK_WINDOW set to `window` (ALL: None) for the block; DEFAULT: as it is."""
    from storage.search import sql

    if window is DEFAULT or not hasattr(sql, "RANK_WINDOW"):
        yield
        return
    kept = sql.RANK_WINDOW
    sql.RANK_WINDOW = None if window == ALL else window
    try:
        yield
    finally:
        sql.RANK_WINDOW = kept


DEFAULT = object()


def concurrent(search: Any, mix: list[SearchQuery], clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads sending queries back to back for `seconds`: latency percentiles and rate.

    Client n sends mix[n], mix[n + 1], ... in turn (a mix of one: every client sends the same query).
    """
    samples: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client(n: int, mine: list[float]) -> None:
        start.wait()
        while not stop.is_set():
            began = time.perf_counter()
            search(mix[n % len(mix)])
            mine.append((time.perf_counter() - began) * 1000)
            n += 1

    threads = [threading.Thread(target=client, args=(n, mine), daemon=True) for n, mine in enumerate(samples)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    everything = [ms for mine in samples for ms in mine]
    return {
        "p50": percentile(everything, 0.5),
        "p99": percentile(everything, 0.99),
        "qps": len(everything) / elapsed,
        "n": len(everything),
    }


@contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "postgresql":
        with temporary_database(prefix="mkt_bench") as url:
            yield url
    else:
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/bench.db"


Figures = dict[str, dict[str, Any]]  # label -> {"matches", "p50", "p99", "approximate", ...}


def run_backend(
    backend: str, sizes: list[int], repeats: int, clients: int, seconds: float, compare: bool, http: HttpOptions
) -> tuple[dict[str, Figures], dict[str, Figures]]:
    """This code's figures per size, and (with `compare`) the same run's figures ranking every match.

    `http.mode`: "yes" adds the HTTP clients' rows, "only" measures nothing else."""
    windows = [ALL, DEFAULT] if compare else [DEFAULT]
    figures: list[dict[str, Figures]] = [{} for _ in windows]
    corpus = Corpus()
    mix = queries(corpus)
    with database(backend) as url:
        upgrade(url)
        os.environ["MARKETPLACE_DATABASE__URL"] = url
        reset_engine()
        index = get_search_index()
        loaded = 0
        for size in sizes:
            seconds_loading = load(index, corpus, loaded, size - loaded)
            print(f"{backend}: loaded {size - loaded} services in {seconds_loading:.1f} s", flush=True)
            loaded = size
            with get_engine().begin() as connection:  # fresh statistics, as autovacuum (PostgreSQL) would
                connection.execute(text("ANALYZE"))
            if http.mode == "only":
                figures[-1][f"{size}"] = _http_rows(url, mix, clients, http)
                continue
            measured = measure(index, mix, repeats, windows)
            for window, samples, out in zip(windows, measured, figures, strict=True):
                with rank_window(window):
                    rows = _rows(index, mix, samples)
                    if clients:
                        rows.update(_concurrent_rows(index, mix, clients, seconds))
                    if clients and http.mode == "yes" and window is DEFAULT:
                        rows.update(_http_rows(url, mix, clients, http))
                for label, row in rows.items():
                    print(backend, size, "all" if window is ALL else "window", label, row, flush=True)
                out[f"{size}"] = rows
        reset_engine()
    return figures[-1], figures[0] if compare else {}


def _rows(index: SearchIndex, mix: list[tuple[str, SearchQuery]], samples: dict[str, list[float]]) -> Figures:
    pages: dict[str, SearchPage] = {label: index.search(query) for label, query in mix}
    rows: Figures = {}
    everything = [ms for values in samples.values() for ms in values]
    for label, values in [*samples.items(), ("all queries", everything)]:
        page = pages.get(label)
        facets = getattr(page, "facets", None)
        rows[label] = {
            "matches": page.total if page else None,
            "approximate": bool(getattr(facets, "approximate", False)),
            "total_approximate": bool(getattr(page, "total_approximate", False)),
            "ranking_approximate": bool(getattr(page, "ranking_approximate", False)),
            "p50": percentile(values, 0.5),
            "p99": percentile(values, 0.99),
        }
    return rows


def _concurrent_rows(index: SearchIndex, mix: list[tuple[str, SearchQuery]], clients: int, seconds: float) -> Figures:
    from api.routes.search import run_search
    from storage.cache import get_cache

    rows: Figures = {}
    same, varied = [dict(mix)[BROAD]], [SearchQuery(text=word) for word in BROAD_WORDS]
    for label, through_cache, sent in (
        (f"{BROAD}, {clients} clients, straight to the backend", False, same),
        (f"{VARIED}, {clients} clients, straight to the backend", False, varied),
        (f"{BROAD}, {clients} clients, through the API's result cache", True, same),
        (f"{VARIED}, {clients} clients, through the API's result cache", True, varied),
    ):
        get_cache.cache_clear()  # an empty result cache: nothing kept from an earlier run
        search = partial(run_search, cache=get_cache(), index=index) if through_cache else index.search
        matches = index.search(sent[0]).total if sent is same else None
        rows[label] = {**concurrent(search, sent, clients, seconds), "matches": matches}
    return rows


HTTP_CASES = (
    (f"{BROAD}, {{clients}} clients", False),
    (f"{VARIED}, {{clients}} clients", True),
)


@dataclass
class HttpOptions:
    """The HTTP phase: `rounds` of `seconds` per case and target, the targets alternating."""

    mode: str  # "yes", "no" or "only"
    base: str | None  # a git revision whose API is measured beside this one's ("before")
    rounds: int
    seconds: float


def _http_rows(url: str, mix: list[tuple[str, SearchQuery]], clients: int, http: HttpOptions) -> Figures:
    """`clients` closed-loop HTTP clients against the API as `make up` serves it (one uvicorn
    process, the in-process result cache, 30 s TTL), a fresh process (an empty cache) per round;
    this code's API and the base revision's, round by round. Each row: medians of the rounds."""
    from bench.loadgen import build_post, closed_loop
    from bench.stack import export_revision

    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
        targets = {"after": here}
        if http.base:
            targets = {"before": export_revision(http.base, Path(tmp) / "before"), **targets}
        rows: Figures = {}
        for label, varied in HTTP_CASES:
            sent = [SearchQuery(text=word) for word in BROAD_WORDS] if varied else [dict(mix)[BROAD]]
            bodies = [query.model_dump_json(by_alias=True, exclude_defaults=True).encode() for query in sent]
            rounds: dict[str, list[dict[str, Any]]] = {target: [] for target in targets}
            for _ in range(http.rounds):
                for target, root in targets.items():
                    with api_server(url, root) as api:
                        raw = [build_post(api, "/api/v1/services/search", {}, body) for body in bodies]
                        result = asyncio.run(closed_loop(api, raw, clients, http.seconds))
                    rounds[target].append(_http_figures(result))
            for target, figures in rounds.items():
                row = {key: statistics.median(f[key] for f in figures) for key in figures[0] if key != "errors"}
                row["errors"] = sum(f["errors"] for f in figures)
                rows[f"{label.format(clients=clients)}, over HTTP ({target})"] = row
        return rows


def _http_figures(result: Any) -> dict[str, Any]:
    everything = result.latencies_ms
    # The first requests find the cache empty: every word is searched at once. After 2 s, and
    # again when the 30 s TTL passes, what a steady stream of users sees.
    warm = [ms for ms, at in zip(everything, result.finished_at, strict=True) if at >= 2.0]
    return {
        "p50": percentile(everything, 0.5),
        "p99": percentile(everything, 0.99),
        "p99_warm": percentile(warm, 0.99) if warm else float("nan"),
        "max": max(everything),
        "qps": len(everything) / result.seconds,
        "n": len(everything),
        "errors": sum(result.errors.values()),
    }


@contextmanager
def api_server(db_url: str, root: Path) -> Iterator[str]:
    """The API of the code under `root` alone (search needs nothing else) on a free loopback port."""
    from bench.stack import started
    from deployments.stack import uvicorn_argv
    from tests.support.services import free_port

    port = free_port()
    env = {**os.environ, "MARKETPLACE_DATABASE__URL": db_url}
    for name in list(env):  # the defaults, as `make up` has them: the in-process cache, no tracing
        if name.startswith(("MARKETPLACE_CACHE__", "MARKETPLACE_TELEMETRY__")):
            del env[name]
    argv = uvicorn_argv("api.app:app", "127.0.0.1", port, grace_seconds=5)  # as `make up` starts it
    with tempfile.TemporaryDirectory() as folder, started(argv, root, env, Path(folder) / "api.log") as proc:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    output = (Path(folder) / "api.log").read_text(errors="replace")
                    raise RuntimeError(f"the API did not start:\n{output}") from None
                time.sleep(0.2)
        yield url


def http_table(results: dict[str, dict[str, Figures]]) -> str:
    lines = [
        "| backend | services | clients' queries, over HTTP | code | p50 (ms) | p99 (ms) "
        "| p99 after the first 2 s (ms) | slowest (ms) | requests/s | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for backend, sizes in results.items():
        for size, rows in sizes.items():
            for label, row in rows.items():
                if "over HTTP" not in label:
                    continue
                case, _, target = label.rpartition(", over HTTP (")
                lines.append(
                    f"| {backend} | {int(size):,} | {case} | {target.rstrip(')')} | {row['p50']:.1f} "
                    f"| {row['p99']:.1f} | {row['p99_warm']:.1f} | {row['max']:.0f} | {row['qps']:.0f} "
                    f"| {row['errors']} |"
                )
    return "\n".join(lines)


def _cell(row: dict[str, Any] | None, key: str) -> str:
    if not row or row.get(key) is None:
        return ""
    return f"{row[key]:.1f}"


def table(results: dict[str, dict[str, Figures]], before: dict[str, dict[str, Figures]]) -> str:
    lines = [
        "| backend | services | query | matches | before p50 (ms) | before p99 (ms) | p50 (ms) | p99 (ms) "
        "| q/s before / after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for backend, sizes in results.items():
        for size, rows in sizes.items():
            for label, row in rows.items():
                if "over HTTP" in label:
                    continue  # http_table's
                old = before.get(backend, {}).get(size, {}).get(label)
                matches = f"{row['matches']:,}" if row.get("matches") is not None else ""
                estimated = [
                    w
                    for w, key in (
                        ("total", "total_approximate"),
                        ("facets", "approximate"),
                        ("ranking", "ranking_approximate"),
                    )
                    if row.get(key)
                ]
                if estimated:
                    matches += f" ({' and '.join(estimated)} estimated)"
                rate = f"{old['qps']:.0f} / {row['qps']:.0f}" if old and "qps" in row else ""
                if not old and "qps" in row:
                    rate = f"/ {row['qps']:.0f}"
                lines.append(
                    f"| {backend} | {int(size):,} | {label} | {matches} | {_cell(old, 'p50')} | {_cell(old, 'p99')} "
                    f"| {_cell(row, 'p50')} | {_cell(row, 'p99')} | {rate} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients for the broad query (0: none)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the concurrent clients run")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--before", type=Path, help="figures (--json) of an earlier run, shown beside these")
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the side-by-side run ranking every match (the 'before')"
    )
    parser.add_argument(
        "--http",
        choices=["yes", "no", "only"],
        default="yes",
        help="also (only) measure the clients over HTTP against the API, as `make up` serves it",
    )
    parser.add_argument("--http-base", default="main", help="the revision whose API runs beside this one ('' none)")
    parser.add_argument("--http-rounds", type=int, default=2, help="rounds per HTTP case and API")
    parser.add_argument(
        "--http-seconds", type=float, default=40.0, help="a round's length (past 30 s: the cache's TTL passes once)"
    )
    args = parser.parse_args()
    began = time.perf_counter()
    compare = not args.before and not args.no_compare
    runs = {
        backend: run_backend(
            backend,
            sorted(args.sizes),
            args.repeats,
            args.clients,
            args.seconds,
            compare,
            HttpOptions(args.http, args.http_base or None, args.http_rounds, args.http_seconds),
        )
        for backend in args.backends
    }
    results = {backend: after for backend, (after, _) in runs.items()}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    before = json.loads(args.before.read_text()) if args.before else {b: all_ for b, (_, all_) in runs.items()}
    rendered = table(results, before) if args.http != "only" else ""
    served = http_table(results) if args.http != "no" and args.clients else ""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/search_latency.py " + " ".join(sys.argv[1:])
    print(f"\n{rendered}\n\n{served}\n\ntotal {time.perf_counter() - began:.0f} s")
    if args.no_record:
        return
    with RESULTS.open("a") as out:
        out.write(
            f"\n## Search latency, relevance ranked over a window (SQL backend) — {when}\n\nCommand: "
            f'`{command.strip()}` ("before": {"the --before file" if args.before else "every match ranked, same run"}; '
            f"2 cores, shared; {args.repeats} runs of each query, one at a time, after 2 "
            f"warm-ups, then {args.clients} concurrent clients for {args.seconds:.0f} s; synthetic catalogue, "
            "Zipf-distributed words; ~85% active, 10% deprecated, 5% retired; 70% of services with signals)\n\n"
            f"{rendered}\n"
        )
        if served:
            base = f"`{args.http_base}`" if args.http_base else "none"
            out.write(
                f"\nOver HTTP: {args.clients} clients, each sending its next search when the last was answered, "
                f"against the API as `make up` serves it (one uvicorn process, in-process result cache); "
                f"{args.http_rounds} rounds of {args.http_seconds:.0f} s per case, this code's API and the base "
                f"revision's ({base}) alternating, a new process (an empty cache) each round; medians of the "
                f"rounds.\n\n{served}\n"
            )


if __name__ == "__main__":
    main()
