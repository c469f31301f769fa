"""Search latency of the SQL backend with 10,000 and then 100,000 synthetic services.

    .venv/bin/python bench/search_latency.py [--sizes 10000 100000] [--repeats 30]
        [--backends postgresql sqlite] [--no-record]

PostgreSQL runs in a temporary database (dropped afterwards), SQLite in a temporary file; both
are migrated by Alembic. Services and their search documents are bulk-inserted (multi-row
INSERTs of 1,000, one transaction per 5,000), then a fixed mix of queries runs `--repeats` times
each, one at a time, timed around `SearchIndex.search` (SQL, facets and building the page).
Prints p50/p99 per query and overall, and appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, text

from storage.database import get_engine, reset_engine
from storage.migrate import upgrade
from storage.models import Service
from storage.search import SearchDocumentIn, SearchIndex, SearchQuery, get_search_index
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
    for offset in range(0, count, CHUNK):
        batch = [next(rows) for _ in range(min(CHUNK, count - offset))]
        with get_engine().begin() as connection:
            connection.execute(insert(Service), [service for service, _ in batch])
        index.index_many(document for _, document in batch)
    return time.perf_counter() - began


def queries(corpus: Corpus) -> list[tuple[str, SearchQuery]]:
    rare = corpus.words[3000]
    return [
        ("text, common word", SearchQuery(text="chat")),
        ("text, rare word", SearchQuery(text=rare)),
        ("text, two words", SearchQuery(text="fast translation")),
        ("text + category + pricing", SearchQuery(text="assistant", filters={"category": "chat", "pricing_model": "free"})),  # noqa: E501
        ("text + 2 tags", SearchQuery(text="model", filters={"tags": ["tag-0", "tag-1"]})),
        ("text, sort by name", SearchQuery(text="secure", sort="name")),
        ("filters only (category + compliance)", SearchQuery(filters={"category": "embeddings", "compliance_level": "internal"})),  # noqa: E501
        ("filter: provider", SearchQuery(filters={"provider_id": "prov-7"})),
        ("filter: 1 tag", SearchQuery(filters={"tags": ["tag-3"]})),
        ("browse all (newest), page 1", SearchQuery(include_deprecated=True)),
        ("browse all, offset 5000", SearchQuery(pagination={"offset": 5000, "limit": 20})),
        ("text, offset 2000", SearchQuery(text="model", pagination={"offset": 2000, "limit": 20})),
    ]  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


def measure(index: SearchIndex, mix: list[tuple[str, SearchQuery]], repeats: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {label: [] for label, _ in mix}
    for _, query in mix:
        for _warm_up in range(2):  # warm caches and the connection pool
            index.search(query)
    for _ in range(repeats):  # interleaved, so a noisy moment spreads over every query
        for label, query in mix:
            began = time.perf_counter()
            index.search(query)
            samples[label].append((time.perf_counter() - began) * 1000)
    return samples


@contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "postgresql":
        with temporary_database(prefix="mkt_bench") as url:
            yield url
    else:
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/bench.db"


def run_backend(backend: str, sizes: list[int], repeats: int) -> list[str]:
    rows: list[str] = []
    corpus = Corpus()
    mix = queries(corpus)
    with database(backend) as url:
        upgrade(url)
        os.environ["MARKETPLACE_DATABASE__URL"] = url
        reset_engine()
        index = get_search_index()
        loaded = 0
        for size in sizes:
            seconds = load(index, corpus, loaded, size - loaded)
            print(f"{backend}: loaded {size - loaded} services in {seconds:.1f} s", flush=True)
            loaded = size
            with get_engine().begin() as connection:  # fresh statistics, as autovacuum (PostgreSQL) would
                connection.execute(text("ANALYZE"))
            samples = measure(index, mix, repeats)
            total = {label: index.search(query).total for label, query in mix}
            everything = [ms for values in samples.values() for ms in values]
            for label, values in [*samples.items(), ("all queries", everything)]:
                matches = f"{total[label]:,}" if label in total else ""
                row = f"| {backend} | {size:,} | {label} | {matches} | {percentile(values, 0.5):.1f} | "
                rows.append(row + f"{percentile(values, 0.99):.1f} |")
                print(rows[-1], flush=True)
        reset_engine()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"])
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    began = time.perf_counter()
    rows = [row for backend in args.backends for row in run_backend(backend, sorted(args.sizes), args.repeats)]
    header = "| backend | services | query | matches | p50 (ms) | p99 (ms) |\n| --- | --- | --- | --- | --- | --- |\n"
    table = header + "\n".join(rows)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/search_latency.py " + " ".join(sys.argv[1:])
    print(f"\n{table}\n\ntotal {time.perf_counter() - began:.0f} s")
    if args.no_record:
        return
    with RESULTS.open("a") as out:
        out.write(
            f"\n## Search latency (SQL backend) — {when}\n\nCommand: `{command.strip()}` (2 cores; "
            f"{args.repeats} runs of each query, one at a time, after 2 warm-ups; synthetic catalogue, "
            "Zipf-distributed words; ~85% active, 10% deprecated, 5% retired)\n\n"
            f"{table}\n"
        )


if __name__ == "__main__":
    main()
