"""What the gateway's observability costs: the code before it, with tracing off, and with tracing on.

Three gateway processes side by side, on one PostgreSQL database, one Redis and one fast local
provider (as bench/gateway_latency.py sets them up), with one usage writer process for all:

- `before`: the gateway of a base revision (default `main`), exported with `git archive`;
- `off`: this tree, tracing off (the default; the new request-id handling and metrics included);
- `on`: this tree with `MARKETPLACE_TELEMETRY__OTLP_ENDPOINT` pointing at an OTLP receiver of its
  own process that drops what it gets (every call traced: sample ratio 1).

Each is driven at a fixed rate (open-loop generator, bench/loadgen.py) in alternating rounds,
with the direct call to the provider as reference; the table has the medians of the rounds'
p50/p99, the added latency over the direct call, and the gateway's CPU per call.

    flock /tmp/heavy.lock .venv/bin/python bench/tracing_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway_latency import BODY, PLAN, PY, provider, redis_server, tree_cpu, wait_http  # noqa: E402
from bench.loadgen import build_post, drive  # noqa: E402
from bench.stack import RESULTS, export_revision, started  # noqa: E402
from storage.database import reset_engine  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.support.gateway import add_service, consumer_with_key  # noqa: E402
from tests.support.services import free_port, temporary_database  # noqa: E402


def base_env(db_url: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MARKETPLACE_TELEMETRY__"))}
    return {
        **env,
        "MARKETPLACE_DATABASE__URL": db_url,
        "MARKETPLACE_GATEWAY__REDIS_URL": redis_url,
        "MARKETPLACE_CACHE__REDIS_URL": redis_url,
        "MARKETPLACE_LOG_LEVEL": "WARNING",
        "MARKETPLACE_USAGE__INLINE": "false",
    }


@contextmanager
def gateway(root: Path, env: dict[str, str], workdir: Path, name: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {**env, "MARKETPLACE_GATEWAY__PORT": str(port), "MARKETPLACE_GATEWAY__JOURNAL_DIR": str(workdir / name)}
    with started([PY, "-m", "gateway"], root, env, workdir / f"{name}.log") as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health")
        yield url, proc.pid


def round_at(url: str, token: str, rate: float, seconds: float, pid: int | None) -> dict[str, float]:
    raw = build_post(url, "/v1/chat/completions", {"Authorization": f"Bearer {token}"}, BODY)
    cpu = tree_cpu(pid) if pid else 0.0
    result = asyncio.run(drive(url, [raw], rate, seconds, connections=64))
    lat = sorted(result.latencies_ms)
    ok = max(len(lat), 1)
    return {
        "p50": lat[len(lat) // 2] if lat else float("nan"),
        "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        "cpu_ms": (tree_cpu(pid) - cpu) * 1000 / ok if pid else float("nan"),
        "errors": float(sum(result.errors.values())),
        "ok": float(len(lat)),
    }


def measure(args: argparse.Namespace, workdir: Path, stack: ExitStack, db_url: str) -> dict[str, Any]:
    redis_url = stack.enter_context(redis_server(workdir))
    fast = stack.enter_context(provider(workdir, "provider"))
    _, token = consumer_with_key("bench", [add_service(fast, name="fake-chat")], PLAN)
    env = base_env(db_url, redis_url)
    before_root = export_revision(args.base, workdir / "before")
    sink_port = free_port()
    stack.enter_context(
        started([PY, "-m", "tests.support.otlp_receiver", str(sink_port)], ROOT, env, workdir / "sink.log")
    )
    wait_http(f"http://127.0.0.1:{sink_port}/", ok=(200, 404, 501))
    stack.enter_context(started([PY, "-m", "gateway.writer"], ROOT, env, workdir / "writer.log"))
    targets: dict[str, tuple[str, int | None]] = {"direct": (fast, None)}
    targets["before"] = stack.enter_context(gateway(before_root, env, workdir, "before"))
    targets["off"] = stack.enter_context(gateway(ROOT, env, workdir, "off"))
    traced = {**env, "MARKETPLACE_TELEMETRY__OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}
    targets["on"] = stack.enter_context(gateway(ROOT, traced, workdir, "on"))
    for url, pid in targets.values():  # warm-up
        round_at(url, token, 20, 2, pid)
    seen: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, (url, pid) in targets.items():
            seen[name].append(round_at(url, token, args.rate, args.seconds, pid))
    out: dict[str, Any] = {
        name: {key: statistics.median(r[key] for r in runs) for key in ("p50", "p99", "cpu_ms")}
        | {"errors": sum(r["errors"] for r in runs), "ok": sum(r["ok"] for r in runs)}
        for name, runs in seen.items()
    }
    return out


def table(out: dict[str, Any], args: argparse.Namespace) -> str:
    direct = out["direct"]
    rows = [
        f"Gateway observability overhead, {args.rate:.0f} requests/s, {args.rounds} rounds of {args.seconds:.0f} s "
        f"per target, alternating (base revision `{args.base}`; medians of the rounds)",
        "",
        "| target | p50 ms | p99 ms | added p50 / p99 ms | gateway CPU ms per call | errors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, label in (
        ("direct", "direct call"),
        ("before", "gateway before"),
        ("off", "gateway, tracing off"),
        ("on", "gateway, tracing on"),
    ):
        r = out[name]
        added = "" if name == "direct" else f"+{r['p50'] - direct['p50']:.2f} / +{r['p99'] - direct['p99']:.2f}"
        cpu = "" if name == "direct" else f"{r['cpu_ms']:.3f}"
        rows.append(f"| {label} | {r['p50']:.2f} | {r['p99']:.2f} | {added} | {cpu} | {r['errors']:.0f} |")
    before, off, on = out["before"], out["off"], out["on"]
    rows += [
        "",
        f"tracing off vs before: CPU per call x{off['cpu_ms'] / before['cpu_ms']:.3f}, "
        f"p50 {off['p50'] - before['p50']:+.2f} ms, p99 {off['p99'] - before['p99']:+.2f} ms; "
        f"tracing on vs off: CPU per call x{on['cpu_ms'] / off['cpu_ms']:.3f}, "
        f"p50 {on['p50'] - off['p50']:+.2f} ms",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300, help="fixed rate of each round (requests/s)")
    parser.add_argument("--seconds", type=float, default=10, help="length of each round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base", default="main", help="the revision whose gateway is `before`")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tracing-bench-") as tmp, temporary_database(prefix="bench_trace") as db:
        workdir = Path(tmp)
        upgrade(db)
        os.environ["MARKETPLACE_DATABASE__URL"] = db
        reset_engine()
        with ExitStack() as stack:
            out = measure(args, workdir, stack, db)
        reset_engine()
    text = table(out, args)
    print(text)
    if not args.no_record:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "flock /tmp/heavy.lock .venv/bin/python bench/tracing_overhead.py"
        with RESULTS.open("a") as results:
            results.write(f"\n## Gateway observability overhead ({stamp})\n\n`{command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
