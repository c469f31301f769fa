"""Flow run names and tags: what operators read in the Prefect UI."""

from __future__ import annotations

import pytest

from core.run_names import MAX_PART, RunKind, publish_run_label, run_label

SERVICE_ID = "5b0c6a47-2f0e-4a43-9c1b-0f3f5d1f2e11"


@pytest.mark.parametrize(
    ("kind", "version", "name"),
    [
        (RunKind.PUBLISH, "1.2.0", "publish acme/chat-pro 1.2.0"),
        (RunKind.DEPRECATE, None, "deprecate acme/chat-pro"),
        (RunKind.RETIRE, None, "retire acme/chat-pro"),
        (RunKind.SYNC_REGISTRY, None, "sync-registry acme/chat-pro"),
    ],
)
def test_names_say_what_runs_and_tags_find_the_service(kind: RunKind, version: str | None, name: str) -> None:
    label = run_label(kind, provider_id="acme", service_name="chat-pro", service_id=SERVICE_ID, version=version)
    assert label.name == name
    assert label.tags == ("provider:acme", f"service:{SERVICE_ID}")


def test_a_provider_id_with_line_breaks_stays_on_one_line_and_long_parts_are_cut() -> None:
    label = run_label(
        RunKind.PUBLISH, provider_id="acme\n  corp\t", service_name="x" * 500, service_id=SERVICE_ID, version="1.0.0"
    )
    assert label.name == f"publish acme corp/{'x' * MAX_PART} 1.0.0"
    assert label.tags[0] == "provider:acme corp"


def test_a_publish_label_comes_from_the_spec() -> None:
    spec = {"name": "chat-pro", "version": "1.2.0", "provider": {"id": "acme", "name": "Acme AI"}}
    assert publish_run_label(spec, SERVICE_ID).name == "publish acme/chat-pro 1.2.0"
