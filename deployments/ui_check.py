"""Open a publish run in the Prefect UI with headless Chromium and check what a person sees there:
the run's name, its task runs, its report artifact (and the report itself, rendered).

    python -m deployments.ui_check <flow-run-id> [--ui http://127.0.0.1:4200] [--out ui-check]

What to look for is read from the Prefect API (the run's name, its task runs, its markdown
artifacts); the check then looks for each on the pages a person opens: the run page (the link
the status report gives) with its Task Runs and Artifacts tabs, the same run in Prefect's newer
UI (where the server's home page leads), and the artifact's own page. A screenshot of each is
left in `--out`. Exit status 0 when everything was found, 1 when something was missing, 2 when
no Chromium is installed (`apt-get install chromium` on Debian).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import LogSort

from checks.phase_lines import phase_label
from core.domain import Phase
from deployments.headless import Browser, Page, find_chromium, host_of

WAIT_SECONDS = 30.0  # per view: the UI renders after its own API calls, slower on a busy machine


@dataclass(frozen=True)
class Report:
    """A markdown artifact of the run: where it is, its first line, the titles of its sections."""

    id: str
    key: str
    headline: str
    sections: list[str]


@dataclass(frozen=True)
class Expected:
    """What the Prefect API says a person should find."""

    run_id: str
    run_name: str
    task_names: list[str]
    reports: list[Report]
    phase_lines: list[str]  # the run's log lines that report a phase ("policy compliance: passed")


@dataclass
class View:
    """One page as shown: what was looked for, what did not show, and its screenshot."""

    name: str
    url: str
    wanted: list[str]
    missing: list[str] = field(default_factory=list)
    screenshot: Path | None = None


def expected_from(api_url: str, flow_run_id: str) -> Expected:
    """Read the run, its task runs, its markdown artifacts and its logs from the Prefect API."""
    run_id = UUID(flow_run_id)
    with SyncPrefectClient(api_url) as client:
        run = client.read_flow_run(run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), sort=LogSort.TIMESTAMP_ASC, limit=200
        )
    reports = [
        Report(id=str(a.id), key=a.key, headline=a.description or "", sections=_sections(str(a.data)))
        for a in artifacts
        if a.type == "markdown" and a.key
    ]
    prefixes = tuple(f"{phase_label(phase)}: " for phase in Phase)
    return Expected(
        run_id=flow_run_id,
        run_name=run.name,
        task_names=sorted({t.name for t in tasks}),
        reports=reports,
        phase_lines=[" ".join(log.message.split()) for log in logs if log.message.startswith(prefixes)],
    )


def _sections(markdown: str) -> list[str]:
    """The report's section titles as rendered (`### Phases` shows as `Phases`)."""
    return [line.removeprefix("### ").strip() for line in markdown.splitlines() if line.startswith("### ")]


def check_run(chromium: str, ui_url: str, expected: Expected, out: Path, wait: float = WAIT_SECONDS) -> list[View]:
    """Every view of the run, looked at in one browser; screenshots go to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    ui = ui_url.rstrip("/")
    run_page = f"{ui}/runs/flow-run/{expected.run_id}"
    v2_page = f"{ui}/v2/runs/flow-run/{expected.run_id}"
    artifact_words = [text for r in expected.reports for text in (r.key, r.headline) if text]
    views = [
        (View("run", run_page, [expected.run_name, *expected.phase_lines]), None),  # opens on its logs
        (View("task-runs", run_page, expected.task_names), "Task Runs"),
        (View("artifacts", run_page, artifact_words), "Artifacts"),
        (View("v2-task-runs", f"{v2_page}?tab=TaskRuns", [expected.run_name, *expected.task_names]), None),
        (View("v2-artifacts", f"{v2_page}?tab=Artifacts", artifact_words), None),
    ]
    views += [
        (View(f"report-{n + 1}", f"{ui}/artifacts/artifact/{r.id}", [r.headline, *r.sections]), None)
        for n, r in enumerate(expected.reports)
    ]
    with Browser(chromium, host_of(ui)) as browser, browser.page() as page:
        for view, tab in views:
            _look(page, view, tab, out, wait)
    return [view for view, _ in views]


def _look(page: Page, view: View, tab: str | None, out: Path, wait: float) -> None:
    """Open the view (clicking a tab when it has one), wait for its text, take its picture."""
    page.open(view.url)
    if tab is not None:
        view.missing = page.wait_for_text([tab], wait)  # the tab bar renders with the run
        clicked = page.evaluate(_CLICK_TAB % repr(tab))
        if not clicked:
            view.missing = [f"tab {tab!r}"]
    view.missing = view.missing or page.wait_for_text(view.wanted, wait)
    view.screenshot = page.screenshot(out / f"{view.name}.png")


# A tab of the run page is a list item (or button) whose whole text is the tab's label.
_CLICK_TAB = """(() => {
  const label = %s;
  const tab = [...document.querySelectorAll('li, button, a, [role=tab]')].find(e => e.textContent.trim() === label);
  if (tab) { tab.click(); }
  return Boolean(tab);
})()"""


def problems(expected: Expected, views: list[View]) -> list[str]:
    """What a person would not find, one line each (empty: everything showed)."""
    found: list[str] = []
    if not expected.task_names:
        found.append("the run has no task runs")
    if not expected.reports:
        found.append("the run has no markdown artifact with a key")
    if not expected.phase_lines:
        found.append("the run logged no phase line")
    found += [f"{v.name} ({v.url}): not shown: {', '.join(v.missing)}" for v in views if v.missing]
    return found


def main(argv: list[str] | None = None, echo: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.ui_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("flow_run_id", help="the publish run (the flowRunId the API answered)")
    parser.add_argument("--ui", default="http://127.0.0.1:4200", help="the Prefect UI (default: make up's)")
    parser.add_argument("--api", default=None, help="the Prefect API (default: <ui>/api)")
    parser.add_argument("--out", type=Path, default=Path("ui-check"), help="folder for the screenshots")
    parser.add_argument("--wait", type=float, default=WAIT_SECONDS, help="seconds to wait for each view")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        echo("no Chromium found: install it (Debian: apt-get install chromium) or set MARKETPLACE_CHROMIUM")
        return 2
    expected = expected_from(args.api or f"{args.ui.rstrip('/')}/api", args.flow_run_id)
    views = check_run(chromium, args.ui, expected, args.out, args.wait)
    for view in views:
        echo(f"{'ok  ' if not view.missing else 'MISS'} {view.name:<14} {view.url}  -> {view.screenshot}")
    missing = problems(expected, views)
    for line in missing:
        echo(f"missing: {line}")
    keys = [r.key for r in expected.reports]
    echo(f"run {expected.run_name!r}: task runs {expected.task_names}, artifacts {keys}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
