"""What the stack runner tells Prefect's processes through their environment."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prefect.settings.models.root import Settings

from deployments.stack import EVENT_BATCHES, Stack, StackConfig
from deployments.stack_settings import StackSettings


def prefect_settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Prefect's settings as a process started with `env` reads them."""
    for name, value in env.items():
        if name.startswith("PREFECT_"):
            monkeypatch.setenv(name, value)
    return Settings()


def test_queued_runs_are_marked_late_after_a_minute_not_prefects_15_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MARKETPLACE_PREFECT__LATE_AFTER_SECONDS", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS", raising=False)
    env = Stack(StackConfig(prefect_home=tmp_path)).env
    assert prefect_settings_from(env, monkeypatch).server.services.late_runs.after_seconds == timedelta(seconds=60)


def test_the_late_threshold_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS", raising=False)
    monkeypatch.setenv("MARKETPLACE_PREFECT__LATE_AFTER_SECONDS", "20")
    env = Stack(StackConfig(prefect_home=tmp_path)).env
    assert prefect_settings_from(env, monkeypatch).server.services.late_runs.after_seconds == timedelta(seconds=20)
    # Prefect's own variable, when an operator sets it, is left alone.
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS", "45")
    env = Stack(StackConfig(prefect_home=tmp_path)).env
    assert prefect_settings_from(env, monkeypatch).server.services.late_runs.after_seconds == timedelta(seconds=45)


def test_prefect_services_take_events_in_batches_flushed_every_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in EVENT_BATCHES:
        monkeypatch.delenv(name, raising=False)
    services = prefect_settings_from(Stack(StackConfig(prefect_home=tmp_path)).env, monkeypatch).server.services
    assert services.task_run_recorder.batch_size == services.event_persister.batch_size == 100
    assert services.task_run_recorder.read_batch_size == services.event_persister.read_batch_size == 100
    # Prefect 3.8.8 truncates the recorder's interval to whole seconds; below 1 its flush loop spins.
    assert services.task_run_recorder.flush_interval == int(services.task_run_recorder.flush_interval) >= 1
    assert services.event_persister.flush_interval == 1


def test_stack_settings_answer_to_their_old_names_and_the_new_ones_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings only the stack runner reads moved to MARKETPLACE_STACK__*; the old names still work."""
    for name in ("MARKETPLACE_STACK__WORKER_PROCESSES", "MARKETPLACE_STACK__PREFECT_SERVER_NICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MARKETPLACE_WORKER__PROCESSES", "3")
    monkeypatch.setenv("MARKETPLACE_PREFECT__SERVER_NICE", "7")
    monkeypatch.setenv("MARKETPLACE_STACK__WORKER_NICE", "9")
    local = Stack(StackConfig(prefect_home=tmp_path)).local
    assert (local.worker_processes, local.prefect_server_nice, local.worker_nice) == (3, 7, 9)
    assert StackSettings().worker_processes == 3, "read from the process's environment too"
    monkeypatch.setenv("MARKETPLACE_STACK__WORKER_PROCESSES", "2")
    assert Stack(StackConfig(prefect_home=tmp_path)).local.worker_processes == 2
    # The stack's own extra variables count, as they did when it read them from its environment.
    config = StackConfig(prefect_home=tmp_path, extra_env={"MARKETPLACE_STACK__WORKER_PROCESSES": "4"})
    assert Stack(config).local.worker_processes == 4
