"""Gateway overhead and throughput, side by side with the direct call and with LiteLLM's proxy.

As in production: the gateway (`python -m gateway`, uvicorn + uvloop + httptools, aiohttp to the
provider) with key check, rate limit, quota reservation and usage recording on, against a
PostgreSQL database (usage partitioned by month) and a Redis of its own (AOF, fsync every
second). The provider is a fast local fake (asyncio + httptools) answering at once with an
OpenAI-style body.

Measured in one run:
- added latency at a fixed rate (open-loop generator, bench/loadgen.py): direct and gateway
  alternating in rounds, medians of the rounds' p50/p99;
- streaming: time to the first byte of an SSE answer, direct and through the gateway;
- throughput: `wrk` (Debian's; installed if missing) for 30 s through the gateway, errors, the
  gateway's CPU per call, and the usage rows counted against the answers wrk saw;
- the peer: LiteLLM's proxy (`litellm[proxy]` in a virtual environment of the benchmark's own,
  never a project dependency) in front of the same provider, at the same fixed rate and under
  wrk, with its master key checked on every call.

    flock /tmp/heavy.lock .venv/bin/python bench/gateway_latency.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import build_post, drive  # noqa: E402
from bench.stack import RESULTS, cpu_seconds  # noqa: E402
from core.plans import Plan  # noqa: E402
from storage.database import reset_engine  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.support.gateway import add_service, consumer_with_key  # noqa: E402
from tests.support.services import free_port, temporary_database  # noqa: E402

BODY = orjson.dumps({"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50})
STREAM_BODY = orjson.dumps({"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True})
PLAN = Plan(name="bench", requests_per_minute=10**9, requests_per_month=10**9, tokens_per_month=10**12)
MASTER_KEY = "sk-bench-" + "m" * 40
PY = sys.executable


def wait_http(url: str, timeout: float = 60, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code in ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up")


@contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the parts ---------------------------------------------------------------------------------


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--dir", str(workdir), "--appendonly", "yes"]
    argv += ["--appendfsync", "everysec", "--save", ""]
    with process(argv, workdir / "redis.log"):
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG":
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"


@contextmanager
def provider(workdir: Path, name: str, chunk_delay: float = 0.0) -> Iterator[str]:
    port = free_port()
    argv = [PY, "-m", "tests.support.llm_provider", "--port", str(port), "--chunk-delay", str(chunk_delay)]
    with process(argv, workdir / f"{name}.log", {**os.environ, "PYTHONPATH": str(ROOT)}):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", ok=(200, 400, 404, 405))
        yield url


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live children (uvicorn's workers under its supervisor)."""
    total = cpu_seconds(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += tree_cpu(int(child))
    return total


@contextmanager
def gateway(
    workdir: Path, db_url: str, redis_url: str, workers: int, name: str = "gateway"
) -> Iterator[tuple[str, int, int]]:
    """Gateway processes (usage written by a writer process of its own): url, gateway pid, writer pid."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MARKETPLACE_DATABASE__URL": db_url,
        "MARKETPLACE_GATEWAY__REDIS_URL": redis_url,
        "MARKETPLACE_CACHE__REDIS_URL": redis_url,
        "MARKETPLACE_GATEWAY__PORT": str(port),
        "MARKETPLACE_GATEWAY__JOURNAL_DIR": str(workdir / "journal"),
        "MARKETPLACE_LOG_LEVEL": "WARNING",
        "MARKETPLACE_USAGE__INLINE": "false",
        "MARKETPLACE_GATEWAY__WORKERS": str(workers),
    }
    with (
        process([PY, "-m", "gateway"], workdir / f"{name}.log", env) as proc,
        process([PY, "-m", "gateway.writer"], workdir / "writer.log", env) as writer,
    ):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health")
        yield url, proc.pid, writer.pid


def litellm_venv(cache: Path) -> Path | None:
    """A virtual environment with litellm[proxy], made once and reused."""
    binary = cache / "litellm-venv" / "bin" / "litellm"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(cache / "litellm-venv")], check=True)
        pip = cache / "litellm-venv" / "bin" / "pip"
        done = subprocess.run([str(pip), "install", "-q", "litellm[proxy]"], capture_output=True, text=True)
        if done.returncode != 0:
            print("litellm could not be installed:", done.stderr[-2000:])
            return None
    return binary


@contextmanager
def litellm(workdir: Path, binary: Path, provider_url: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fake-chat\n"
        "    litellm_params:\n"
        "      model: openai/fake-chat\n"
        f"      api_base: {provider_url}/v1\n"
        "      api_key: upstream-key\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    env = {**os.environ, "LITELLM_LOG": "ERROR", "NO_DOCS": "True"}
    argv = [str(binary), "--config", str(config), "--port", str(port), "--num_workers", "1"]
    with process(argv, workdir / "litellm.log", env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/liveliness", timeout=180)
        yield url, proc.pid


# --- measurements ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def fixed_rate(url: str, path: str, token: str, rate: float, seconds: float) -> dict[str, float]:
    raw = build_post(url, path, {"Authorization": f"Bearer {token}"}, BODY)
    result = asyncio.run(drive(url, [raw], rate, seconds, connections=64))
    lat = result.latencies_ms
    return {
        "p50": percentile(lat, 0.5),
        "p99": percentile(lat, 0.99),
        "ok": len(lat),
        "errors": sum(result.errors.values()),
    }


def side_by_side(targets: dict[str, tuple[str, str]], rate: float, seconds: float, rounds: int) -> dict[str, Any]:
    """Each target `rounds` times, alternating; the median of each round's p50 and p99."""
    seen: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, (url, token) in targets.items():
            seen[name].append(fixed_rate(url, "/v1/chat/completions", token, rate, seconds))
    return {
        name: {
            "p50": statistics.median(r["p50"] for r in runs),
            "p99": statistics.median(r["p99"] for r in runs),
            "ok": sum(r["ok"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
        }
        for name, runs in seen.items()
    }


async def first_byte_ms(url: str, token: str) -> float:
    """Time from sending a streamed chat call to the first body bytes of its answer."""
    parts = httpx.URL(url)
    reader, writer = await asyncio.open_connection(parts.host, parts.port)
    raw = build_post(
        url, "/v1/chat/completions", {"Authorization": f"Bearer {token}", "Connection": "close"}, STREAM_BODY
    )
    start = time.perf_counter()
    writer.write(raw)
    data = b""
    while b"data:" not in data:
        chunk = await reader.read(65536)
        if not chunk:
            break
        data += chunk
    elapsed = (time.perf_counter() - start) * 1000
    writer.close()
    return elapsed


def streaming(direct: str, through: str, token: str, count: int) -> dict[str, float]:
    async def run() -> tuple[list[float], list[float]]:
        d, g = [], []
        for _ in range(count):
            d.append(await first_byte_ms(direct, token))
            g.append(await first_byte_ms(through, token))
        return d, g

    d, g = asyncio.run(run())
    return {"direct_p50": statistics.median(d), "gateway_p50": statistics.median(g)}


def wrk(url: str, token: str, seconds: int, connections: int, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{BODY.decode()}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)]
    out = subprocess.run([*argv, f"{url}/v1/chat/completions"], capture_output=True, text=True).stdout
    number = lambda pattern: float(m.group(1)) if (m := re.search(pattern, out)) else 0.0  # noqa: E731
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "requests": number(r"(\d+) requests in"),
        "non2xx": number(r"Non-2xx or 3xx responses: (\d+)"),
        "socket_errors": errors,
        "p50_ms": _wrk_ms(out, "50%"),
        "p99_ms": _wrk_ms(out, "99%"),
    }


def _wrk_ms(out: str, label: str) -> float:
    m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def count_rows(db_url: str, expected: int, timeout: float = 120) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as c:
                rows = int(c.execute(text("SELECT count(*) FROM usage_records")).scalar_one())
            if rows >= expected or time.monotonic() > deadline:
                return rows
            time.sleep(1)
    finally:
        engine.dispose()


def throughput(
    url: str, pids: tuple[int, int], token: str, seconds: int, workdir: Path, db_url: str, before: int
) -> dict[str, Any]:
    """wrk through the gateway; CPU per call of the gateway and of the usage writer; rows against answers."""
    gateway_cpu, writer_cpu = tree_cpu(pids[0]), cpu_seconds(pids[1])
    result = wrk(url, token, seconds, 64, workdir)
    calls = max(result["requests"], 1)
    result["cpu_ms_per_call"] = (tree_cpu(pids[0]) - gateway_cpu) * 1000 / calls
    answered = int(result["requests"] - result["non2xx"])
    result["rows"] = count_rows(db_url, before + answered) - before
    result["writer_cpu_ms_per_call"] = (cpu_seconds(pids[1]) - writer_cpu) * 1000 / calls  # rows all written now
    result["answered"] = answered
    return result


def measure(args: argparse.Namespace, workdir: Path, stack: ExitStack, db_url: str) -> dict[str, Any]:
    redis_url = stack.enter_context(redis_server(workdir))
    fast = stack.enter_context(provider(workdir, "provider"))
    slow = stack.enter_context(provider(workdir, "provider-stream", chunk_delay=0.005))
    ids = [add_service(fast, name="fake-chat"), add_service(slow, name="fake-chat-stream")]
    _, token = consumer_with_key("bench", ids, PLAN)
    gw_url, gw_pid, writer_pid = stack.enter_context(gateway(workdir, db_url, redis_url, args.workers))
    out: dict[str, Any] = {}
    targets = {"direct": (fast, token), "gateway": (gw_url, token)}
    peer = None if args.no_litellm else litellm_venv(Path(args.cache))
    if peer is not None:
        ll_url, out["litellm_pid"] = stack.enter_context(litellm(workdir, peer, fast))
        targets["litellm"] = (ll_url, MASTER_KEY)
    answered = side_by_side(targets, 20, 2, 1)["gateway"]["ok"]  # warm-up
    # the peer is left out of the main rate: it cannot hold it, and the backlog of an overloaded
    # process spills CPU into the rounds after its own (it did: the gateway's p99 +41 ms)
    ours = {name: targets[name] for name in ("direct", "gateway")}
    out["latency"] = side_by_side(ours, args.rate, args.seconds, args.rounds)
    answered += out["latency"]["gateway"]["ok"]
    if peer is not None:  # the peer cannot hold the main rate: all three again at one it can
        out["latency_peer_rate"] = side_by_side(targets, args.peer_rate, args.seconds, args.rounds)
        answered += out["latency_peer_rate"]["gateway"]["ok"]
    out["stream"] = streaming(slow, gw_url, token, args.stream_calls)
    answered += args.stream_calls
    before = count_rows(db_url, answered)
    out["rows_before_wrk"] = {"rows": before, "answered": answered}
    out["gateway"] = throughput(gw_url, (gw_pid, writer_pid), token, args.wrk_seconds, workdir, db_url, before)
    out["direct_wrk"] = wrk(fast, token, 10, 64, workdir)
    if peer is not None:
        cpu0 = cpu_seconds(out["litellm_pid"])
        out["litellm_wrk"] = wrk(targets["litellm"][0], MASTER_KEY, args.wrk_seconds, 64, workdir)
        requests = max(out["litellm_wrk"]["requests"], 1)
        out["litellm_wrk"]["cpu_ms_per_call"] = (cpu_seconds(out["litellm_pid"]) - cpu0) * 1000 / requests
    return out


def table(out: dict[str, Any], args: argparse.Namespace) -> str:
    lat = out["latency"]
    d, g = lat["direct"], lat["gateway"]
    gw, st = out["gateway"], out["stream"]
    rows = [
        "| measure | direct | gateway | added / ratio | target |",
        "| --- | --- | --- | --- | --- |",
        f"| latency p50 at {args.rate:g}/s (ms) | {d['p50']:.2f} | {g['p50']:.2f} "
        f"| +{g['p50'] - d['p50']:.2f} | ≤ +1.5 |",
        f"| latency p99 at {args.rate:g}/s (ms) | {d['p99']:.2f} | {g['p99']:.2f} "
        f"| +{g['p99'] - d['p99']:.2f} | ≤ +5 |",
        f"| errors in the latency runs | {d['errors']} | {g['errors']} | | 0 |",
        f"| stream first byte p50 (ms) | {st['direct_p50']:.2f} | {st['gateway_p50']:.2f} "
        f"| +{st['gateway_p50'] - st['direct_p50']:.2f} | ≤ +3 |",
        f"| wrk {args.wrk_seconds} s, 64 connections (req/s) | {out['direct_wrk']['rps']:.0f} "
        f"| {gw['rps']:.0f} | | ≥ 2,000 |",
        f"| wrk errors (non-2xx + socket) | | {gw['non2xx'] + gw['socket_errors']:.0f} | | 0 |",
        f"| gateway CPU per call (ms) | | {gw['cpu_ms_per_call']:.3f} | | ≤ 0.4 |",
        f"| usage writer CPU per call (ms) | | {gw['writer_cpu_ms_per_call']:.3f} | | |",
        f"| usage rows / answered calls, wrk run | | {gw['rows']} / {gw['answered']} | | equal |",
        f"| usage rows / answered calls, before it | | {out['rows_before_wrk']['rows']} "
        f"/ {out['rows_before_wrk']['answered']} | | equal |",
    ]
    if "litellm_wrk" in out:
        rows += _peer_rows(out, args)
    return "\n".join(rows)


def _peer_rows(out: dict[str, Any], args: argparse.Namespace) -> list[str]:
    peer = out["latency_peer_rate"]
    d, g, ll = peer["direct"], peer["gateway"], peer["litellm"]
    ours, theirs = g["p50"] - d["p50"], ll["p50"] - d["p50"]
    ours99, theirs99 = g["p99"] - d["p99"], ll["p99"] - d["p99"]
    lw, gw = out["litellm_wrk"], out["gateway"]
    return [
        "",
        "| at the peer's rate / under wrk | gateway | LiteLLM proxy | gateway / LiteLLM |",
        "| --- | --- | --- | --- |",
        f"| added p50 at {args.peer_rate:g}/s (ms) | +{ours:.2f} | +{theirs:.2f} | {ours / theirs:.3f} |",
        f"| added p99 at {args.peer_rate:g}/s (ms) | +{ours99:.2f} | +{theirs99:.2f} | {ours99 / theirs99:.3f} |",
        f"| errors at {args.peer_rate:g}/s | {g['errors']} | {ll['errors']} | |",
        f"| throughput, wrk 64 connections (req/s) | {gw['rps']:.0f} | {lw['rps']:.0f} "
        f"| {gw['rps'] / max(lw['rps'], 1):.1f} |",
        f"| CPU per call (ms) | {gw['cpu_ms_per_call']:.3f} | {lw['cpu_ms_per_call']:.3f} "
        f"| {gw['cpu_ms_per_call'] / max(lw['cpu_ms_per_call'], 1e-9):.3f} |",
        f"| wrk errors (non-2xx + socket) | {gw['non2xx'] + gw['socket_errors']:.0f} "
        f"| {lw['non2xx'] + lw['socket_errors']:.0f} | |",
    ]


def record(text: str, command: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a") as f:
        f.write(f"\n## Gateway latency and throughput — {stamp}\n\nCommand: `{command}` (2 cores)\n\n{text}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300, help="fixed rate of the latency runs (requests/s)")
    parser.add_argument("--peer-rate", type=float, default=20, help="a rate LiteLLM's proxy can hold")
    parser.add_argument("--seconds", type=float, default=10, help="length of each latency run")
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds (alternating targets)")
    parser.add_argument("--stream-calls", type=int, default=200)
    parser.add_argument("--wrk-seconds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1, help="gateway processes (MARKETPLACE_GATEWAY__WORKERS)")
    parser.add_argument("--no-litellm", action="store_true", help="skip the peer")
    parser.add_argument(
        "--cache", default=str(Path(tempfile.gettempdir()) / "gw-bench"), help="LiteLLM's venv lives here"
    )
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    with temporary_database(prefix="mkt_gwbench") as db_url, ExitStack() as stack:
        upgrade(db_url)
        os.environ["MARKETPLACE_DATABASE__URL"] = db_url
        os.environ.pop("MARKETPLACE_CACHE__REDIS_URL", None)
        reset_engine()
        out = measure(args, workdir, stack, db_url)
        stack.close()
        reset_engine()
    text = table(out, args)
    print(text)
    print(orjson.dumps({k: v for k, v in out.items() if k != "litellm_pid"}, option=orjson.OPT_INDENT_2).decode())
    if not args.no_record:
        record(text + _features(out), " ".join(["python", *sys.argv]))


def _features(out: dict[str, Any]) -> str:
    peer = (
        "\n\nLiteLLM proxy (its own venv, one worker, `model: openai/fake-chat` at the same fake provider): "
        "master-key check on every call. Its virtual keys with rpm limits (the nearest equivalent of our "
        "key check and rate limit) need its database client, Prisma, whose query engine is downloaded on "
        "first use: not possible offline here (checked: the download fails), so they were off. "
        "Ours: key check, rate limit, monthly quota reservation and settlement, usage row per call in "
        "PostgreSQL."
        if "litellm_wrk" in out
        else ""
    )
    return peer


if __name__ == "__main__":
    main()
