"""What an operator sees of a publish run in the Prefect UI, looked at with headless Chromium.

A real publish through the running stack; then deployments.ui_check opens the run's page (the
link the status report gives), its Task Runs and Artifacts tabs, the same run in Prefect's newer
UI and the report artifact's own page, and looks for the run's name, its phase log lines, its task
runs and its report. Without Chromium the test is skipped locally and fails in CI (`.ci/run`
installs it). Screenshots are kept in the test's temporary folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient

from deployments import ui_check
from deployments.headless import find_chromium
from deployments.stack import Stack
from tests.e2e.conftest import eventually
from tests.support.provider import FakeProvider, good_spec
from tests.support.services import CI

pytestmark = pytest.mark.e2e
Wait = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        message = "Chromium is not installed (Debian: apt-get install chromium; or set MARKETPLACE_CHROMIUM)"
        if CI:
            pytest.fail(message + " (CI=true: required; .ci/run installs it when it runs as root)")
        pytest.skip(message)
    return found


def _policy_failure(spec: dict[str, Any]) -> None:
    spec["endpoint"]["url"] = "http://provider.example.com/v1"


@pytest.mark.parametrize(
    ("name", "mutate", "headline", "last_line"),
    [
        ("e2e-ui", None, "Published: acme/e2e-ui 1.2.0 is active", "activation: active, indexed"),
        (
            "e2e-ui-policy",
            _policy_failure,
            "Failed in policy compliance: policy_compliance failed: /endpoint/url: ",
            "policy compliance: 1 violation (https-required)",
        ),
    ],
    ids=["active", "failed"],
)
def test_the_prefect_ui_shows_the_runs_name_tasks_logs_and_report(
    api: httpx.Client,
    e2e_stack: Stack,
    wait_until_settled: Wait,
    chromium: str,
    tmp_path: Path,
    name: str,
    mutate: Callable[[dict[str, Any]], None] | None,
    headline: str,
    last_line: str,
) -> None:
    with FakeProvider() as provider:
        spec = good_spec(provider.url, name=name, version="1.2.0")
        if mutate:
            mutate(spec)
        accepted = api.post("/api/v1/services", json=spec)
        assert accepted.status_code == 202, accepted.text
        service_id = accepted.json()["serviceId"]
        status = wait_until_settled(service_id)
    flow_run_id = status["flowRun"]["id"]
    run_url = status["flowRun"]["url"]
    ui_url = run_url.removesuffix(f"/runs/flow-run/{flow_run_id}")
    assert ui_url != run_url, run_url

    with SyncPrefectClient(e2e_stack.config.prefect_api_url) as prefect:
        run = prefect.read_flow_run(UUID(flow_run_id))
    assert run.name == f"publish acme/{name} 1.2.0"
    assert {"provider:acme", f"service:{service_id}"} <= set(run.tags)

    def logged() -> ui_check.Expected | None:
        # Run logs reach the server in batches after the run's end, and task runs through the event
        # pipeline (recorded by Prefect's background services, later still on a busy machine).
        found = ui_check.expected_from(e2e_stack.config.prefect_api_url, flow_run_id)
        has_line = any(line.startswith(last_line) for line in found.phase_lines)
        return found if has_line and found.task_names else None

    expected = eventually(logged, 60, f"the log line {last_line!r} and the run's task runs")
    assert [r.key for r in expected.reports] == [f"publish-report-{service_id}"]
    assert expected.reports[0].headline.startswith(headline)
    assert any(task.startswith("check-submission-") for task in expected.task_names), expected.task_names

    views = ui_check.check_run(chromium, ui_url, expected, tmp_path)
    assert ui_check.problems(expected, views) == [], f"screenshots in {tmp_path}"
    assert all(view.screenshot is not None and view.screenshot.stat().st_size > 10_000 for view in views)
