"""Validation phase latency: spec schema + metadata + OpenAPI 3.1 (a 1 MiB document) + policies.

    .venv/bin/python bench/validation_latency.py
    .venv/bin/python bench/validation_latency.py --runs 30 --before-runs 3 --before-rev 715b8b7

Calls what the phase's tasks call (their bodies, not through Prefect, no database): the API's
JSON Schema check of the spec, validate_metadata, validate_openapi and check_policies, on a
deterministic, realistic OpenAPI 3.1 document of just over 1 MiB (tests/support/openapi_docs.py)
inside a valid spec. One warm-up run (it compiles the validators and the policy bundle), then
--runs timed runs. The previous implementation (the same four modules at --before-rev, loaded
from git) runs on the same spec in the same process, --before-runs times at most and no longer
than --before-budget seconds (openapi-spec-validator takes seconds per run), so the ratios
compare like with like on the same machine at the same time.

Prints the table and appends it to bench/RESULTS.md. No network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from checks import openapi, policy, spec_schema, validation  # noqa: E402
from checks.openapi_refs import RefChecker  # noqa: E402
from checks.openapi_semantics import semantic_issues  # noqa: E402
from checks.openapi_structure import structural_issues  # noqa: E402
from core.settings import Settings  # noqa: E402
from tests.support.openapi_docs import compact_size, openapi_document  # noqa: E402
from tests.support.specs import make_spec  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
PARTS = ("spec schema", "metadata", "openapi", "policies")
LABELS = {
    "spec schema": "spec JSON Schema (API check)",
    "metadata": "metadata (semver, URL, pricing, residency, size)",
    "openapi": "OpenAPI 3.1 (refs, structure, semantics)",
    "policies": "policies (Rego, regopy)",
    "total": "**total**",
}


@dataclass
class Timings:
    runs: dict[str, list[float]] = field(default_factory=lambda: {part: [] for part in (*PARTS, "total")})

    def add(self, run: dict[str, float]) -> None:
        for part, ms in run.items():
            self.runs[part].append(ms)
        self.runs["total"].append(sum(run.values()))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def phase(modules: dict[str, Any], spec: dict[str, Any], settings: Settings) -> dict[str, Callable[[], Any]]:
    """The four checks as the phase runs them, each returning its findings."""
    return {
        "spec schema": lambda: modules["spec_schema"].schema_errors(spec),
        "metadata": lambda: modules["validation"].validate_metadata(spec, settings).errors,
        "openapi": lambda: modules["openapi"].validate_openapi(spec, settings).errors,
        "policies": lambda: modules["policy"].check_policies(spec, settings).errors,
    }


def timed_run(checks: dict[str, Callable[[], Any]]) -> tuple[dict[str, float], dict[str, int]]:
    times, findings = {}, {}
    for part, check in checks.items():
        t0 = time.perf_counter()
        found = check()
        times[part] = (time.perf_counter() - t0) * 1000
        findings[part] = len(found)
    return times, findings


def load_before(rev: str, path: str) -> types.ModuleType:
    """A module as it was at `rev`, loaded beside the current one (its own caches, same dependencies)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True, text=True
    ).stdout
    name = "before_" + path.removesuffix(".py").replace("/", "_")
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # our own history, from git
    return module


def openapi_parts(doc: dict[str, Any], runs: int) -> dict[str, list[float]]:
    """The three passes of the new OpenAPI check, timed on their own."""
    parts: dict[str, list[float]] = {"references": [], "structure (jsonschema-rs)": [], "semantics": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        refs = RefChecker(doc)
        assert refs.issues() == []
        t1 = time.perf_counter()
        assert structural_issues(doc) == []
        t2 = time.perf_counter()
        assert semantic_issues(doc, refs) == []
        t3 = time.perf_counter()
        for part, ms in zip(parts, ((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000), strict=True):
            parts[part].append(ms)
    return parts


def row(label: str, after: list[float], before: list[float] | None) -> str:
    p50 = statistics.median(after)
    cells = [label, f"{p50:.1f}", f"{percentile(after, 0.95):.1f}", f"{min(after):.1f}"]
    if before:
        b50 = statistics.median(before)
        cells += [f"{b50:,.1f}", str(len(before)), f"{b50 / p50:,.0f}x"]
    else:
        cells += ["", "", ""]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--resources", type=int, default=161, help="resources in the document (161: ~1 MiB)")
    parser.add_argument("--before-rev", default="715b8b7", help="git revision of the previous implementation")
    parser.add_argument("--before-runs", type=int, default=3, help="0 skips the previous implementation")
    parser.add_argument("--before-budget", type=float, default=180, help="seconds the previous one may take")
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()

    settings = Settings()
    doc = openapi_document(args.resources)
    spec = make_spec(openApiSpec=doc)
    size = compact_size(doc)
    load_start = os.getloadavg()[0]

    current = {"spec_schema": spec_schema, "validation": validation, "openapi": openapi, "policy": policy}
    checks = phase(current, spec, settings)
    warm_up, findings = timed_run(checks)
    if any(findings.values()):
        raise SystemExit(f"the benchmark spec should pass every check, found {findings}")
    after = Timings()
    for _ in range(args.runs):
        after.add(timed_run(checks)[0])
    passes = openapi_parts(doc, args.runs)

    before = Timings()
    if args.before_runs:
        paths = {"spec_schema": "checks/spec_schema.py", "validation": "checks/validation.py"}
        paths |= {"openapi": "checks/openapi.py", "policy": "checks/policy.py"}
        old = phase({key: load_before(args.before_rev, path) for key, path in paths.items()}, spec, settings)
        cheap = {part: check for part, check in old.items() if part != "openapi"}
        timed_run(cheap)  # warm-up of the old caches (validator, policy bundle); the library has none to speak of
        deadline = time.perf_counter() + args.before_budget
        while len(before.runs["total"]) < args.before_runs and time.perf_counter() < deadline:
            times, found = timed_run(old)
            if any(found.values()):
                raise SystemExit(f"the previous implementation found {found} on the benchmark spec")
            before.add(times)
    load_end = os.getloadavg()[0]

    header = (
        "| part | p50 (ms) | p95 (ms) | min (ms) | before p50 (ms) | before runs | before / after (p50) |\n"
        "| --- | --- | --- | --- | --- | --- | --- |"
    )
    rows = [row(LABELS[part], after.runs[part], before.runs[part]) for part in (*PARTS, "total")]
    rows += [row(f"OpenAPI pass: {part} (timed separately)", ms, None) for part, ms in passes.items()]
    rows.append(row("first run after start (compiles validators, policy bundle)", [sum(warm_up.values())], None))
    table = "\n".join([header, *rows])
    operations = sum(1 for item in doc["paths"].values() for key in item if key in ("get", "put", "post", "patch"))
    operations += sum(1 for item in doc["paths"].values() if "delete" in item)
    facts = (
        f"Document: {size:,} bytes of compact JSON, {len(doc['paths'])} paths, {operations} operations, "
        f"{len(doc['components']['schemas'])} component schemas; the spec passes every check (both versions). "
        f"{args.runs} runs after one warm-up; before: {len(before.runs['total'])} run(s) of `{args.before_rev}` "
        f"in the same process. Load average (1 min) {load_start:.2f} at start, {load_end:.2f} at end."
    )
    print(table)
    print()
    print(facts)
    command = "python bench/validation_latency.py" + "".join(
        f" --{name.replace('_', '-')} {value}"
        for name, value in vars(args).items()
        if value != parser.get_default(name) and name != "no_append"
    )
    if args.no_append:
        return
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a") as out:
        out.write(
            f"\n## Validation phase latency — {when}\n\nCommand: `{command}` (2 cores, shared)\n\n{table}\n\n{facts}\n"
        )


if __name__ == "__main__":
    main()
