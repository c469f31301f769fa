"""The outbox relay against a real Kafka-protocol broker (Tansu): delivery, order, restarts, dead letters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator, FormatChecker

from api.app import create_app
from api.auth import Role, issue_token
from core.settings import KafkaSettings, get_settings
from notifications.relay import OutboxRelay
from storage.database import reset_engine, session_scope
from storage.models import OutboxEvent
from storage.repositories import outbox
from tests.support.events import write_lifecycles, write_updates
from tests.support.kafka import TansuBroker, read_messages, topic_reader
from tests.support.services import free_port

SCHEMA = json.loads((Path(__file__).parents[2] / "notifications" / "events.schema.json").read_text())
PARTITIONS = 3


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TansuBroker]:
    with TansuBroker(log_path=tmp_path / "tansu.log") as running:
        yield running


def relay_settings(bootstrap_servers: str, **overrides: Any) -> KafkaSettings:
    """Short waits so failures and retries happen within a test's time."""
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "topic_partitions": PARTITIONS,
        "delivery_timeout_seconds": 5.0,
        "poll_interval_seconds": 0.05,
        "retry_base_seconds": 0.1,
        "retry_max_seconds": 0.5,
    }
    return KafkaSettings(**{**values, **overrides})


def all_events() -> dict[str, OutboxEvent]:
    with session_scope() as session:
        rows, _ = outbox.list_by_status(session, None, 0, 10_000)
        return {e.event_id: e for e in rows}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def all_delivered() -> bool:
    return all(e.status == outbox.DELIVERED for e in all_events().values())


def assert_in_order_per_service(messages: list[dict[str, Any]], events: dict[str, OutboxEvent]) -> None:
    """Within each partition (offset order), every service's events come in outbox order."""
    sequences: dict[str, list[int]] = defaultdict(list)
    for message in sorted(messages, key=lambda m: (m["partition"], m["offset"])):
        sequences[message["key"]].append(events[message["headers"]["ce_id"]].id)
    for key, sequence in sequences.items():
        assert sequence == sorted(sequence), f"events of service {key} out of order: {sequence}"


@pytest.fixture
def running_relay() -> Iterator[Callable[[KafkaSettings], OutboxRelay]]:
    """Start `OutboxRelay.run()` in a thread; stopped (and joined) at the end of the test."""
    started: list[tuple[OutboxRelay, threading.Thread]] = []

    def start(settings: KafkaSettings) -> OutboxRelay:
        relay = OutboxRelay(settings)
        thread = threading.Thread(target=relay.run, name="relay", daemon=True)
        thread.start()
        started.append((relay, thread))
        return relay

    yield start
    for relay, thread in started:
        relay.stop()
        thread.join(timeout=15)
        assert not thread.is_alive(), "the relay did not stop within 15 s"


def test_events_reach_the_topic_with_key_headers_payload_in_order(database_url: str, broker: TansuBroker) -> None:
    write_lifecycles(3)
    events = all_events()
    relay = OutboxRelay(relay_settings(broker.bootstrap_servers))
    try:
        for _ in range(10):
            if relay.run_once().read == 0:
                break
    finally:
        relay.close()
    assert all_delivered()
    assert all(e.delivered_at is not None and e.attempts == 0 for e in all_events().values())

    with topic_reader(broker.bootstrap_servers, "marketplace.events", PARTITIONS) as reader:
        messages = read_messages(reader, len(events)) + read_messages(reader, 1, timeout=0.5)
    assert len(messages) == len(events)
    validator = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
    for message in messages:
        event = events[message["value"]["id"]]
        assert message["value"] == event.payload
        assert message["key"] == event.aggregate_id == message["value"]["subject"]
        headers = message["headers"]
        assert headers["ce_id"] == event.event_id
        assert headers["ce_type"] == f"marketplace.{event.event_type}"
        assert (headers["ce_specversion"], headers["ce_source"]) == ("1.0", "/marketplace/publishing")
        assert (headers["ce_subject"], headers["ce_time"]) == (event.aggregate_id, event.payload["time"])
        assert headers["content-type"].startswith("application/cloudevents+json")
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(event.payload)]
        assert not errors, f"{event.event_type} does not match events.schema.json: {errors}"
    assert {m["value"]["type"] for m in messages} == set(SCHEMA["properties"]["type"]["enum"])
    assert_in_order_per_service(messages, events)


def test_a_broker_restart_loses_no_event_and_repeats_none(
    database_url: str, broker: TansuBroker, running_relay: Callable[[KafkaSettings], OutboxRelay]
) -> None:
    service_ids = write_lifecycles(4)
    running_relay(relay_settings(broker.bootstrap_servers, delivery_timeout_seconds=1.0))
    wait_for(all_delivered, 15, "the first events to be delivered")
    before = all_events()
    with topic_reader(broker.bootstrap_servers, "marketplace.events", PARTITIONS) as reader:
        first = read_messages(reader, len(before))
    assert len(first) == len(before)

    broker.stop()  # memory storage: the broker comes back empty, without the topic or our producer id
    write_updates(service_ids, rounds=5)
    later = set(all_events()) - set(before)
    # Each service's first event since the stop fails; its later ones wait behind it (order).
    outage = [e for e in all_events().values() if e.event_id in later]
    heads = {min(e.id for e in outage if e.aggregate_id == service_id) for service_id in service_ids}

    def heads_failed() -> bool:
        return all(e.attempts >= 1 for e in all_events().values() if e.id in heads)

    wait_for(heads_failed, 15, "failed attempts while the broker is down")
    assert all(all_events()[i].status == outbox.PENDING for i in later)
    broker.start()
    wait_for(all_delivered, 20, "the events written during the outage to be delivered")

    with topic_reader(broker.bootstrap_servers, "marketplace.events", PARTITIONS) as reader:
        second = read_messages(reader, len(later)) + read_messages(reader, 1, timeout=1.0)
    ids = [m["headers"]["ce_id"] for m in first + second]
    assert len(ids) == len(set(ids)), "an event reached the topic twice"
    assert set(ids) == set(all_events()), "an event never reached the topic"
    events = all_events()
    assert_in_order_per_service(first, events)
    assert_in_order_per_service(second, events)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app in-process; the events routes never call Prefect, whose (lazy) client points nowhere."""
    monkeypatch.setenv("MARKETPLACE_PREFECT__API_URL", f"http://127.0.0.1:{free_port()}/api")
    reset_engine()
    with TestClient(create_app()) as client:
        yield client
    reset_engine()


def bearer(role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(f'test-{role.value}', role, get_settings().auth)}"}


def test_an_event_the_broker_never_takes_is_dead_listed_and_retried(database_url: str, api: TestClient) -> None:
    broker = TansuBroker()  # not started yet: nobody listens on its port
    write_lifecycles(1, with_consumers=False)  # one key: one event dead, all others held behind it
    relay = OutboxRelay(relay_settings(broker.bootstrap_servers, max_attempts=2, delivery_timeout_seconds=0.3))
    try:
        deadline = time.monotonic() + 15
        while not any(e.status == outbox.DEAD for e in all_events().values()) and time.monotonic() < deadline:
            relay.run_once()
            time.sleep(0.05)
        (dead,) = [e for e in all_events().values() if e.status == outbox.DEAD]
        assert (dead.event_type, dead.attempts) == ("service_submitted", 2)
        assert dead.dead_at is not None and "no acknowledgement" in (dead.last_error or "")
        # it holds back the later events of its service: pending, not due, not dead
        assert all(e.status == outbox.PENDING for e in all_events().values() if e.id != dead.id)
        with session_scope() as session:
            assert outbox.due_pending(session, limit=100) == []

        listed = api.get("/api/v1/events", params={"status": "dead"}, headers=bearer(Role.GOVERNANCE))
        assert listed.status_code == 200
        assert [(i["eventId"], i["attempts"]) for i in listed.json()["items"]] == [(dead.event_id, 2)]
        assert api.get("/api/v1/events", headers=bearer(Role.CONSUMER)).status_code == 403
        assert api.post(f"/api/v1/events/{dead.event_id}/retry").status_code == 401
        retried = api.post(f"/api/v1/events/{dead.event_id}/retry", headers=bearer(Role.ADMIN))
        assert retried.status_code == 200
        assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
        assert api.post(f"/api/v1/events/{dead.event_id}/retry", headers=bearer(Role.ADMIN)).status_code == 409

        broker.start()
        deadline = time.monotonic() + 20
        while not all_delivered() and time.monotonic() < deadline:
            relay.run_once()
            time.sleep(0.05)
        assert all_delivered()
        with topic_reader(broker.bootstrap_servers, "marketplace.events", PARTITIONS) as reader:
            messages = read_messages(reader, len(all_events())) + read_messages(reader, 1, timeout=0.5)
        assert sorted(m["headers"]["ce_id"] for m in messages) == sorted(all_events())
        assert_in_order_per_service(messages, all_events())
    finally:
        relay.close()
        broker.stop()


def test_the_relay_process_stops_cleanly_on_sigterm(database_url: str, broker: TansuBroker) -> None:
    env = {
        **os.environ,
        "MARKETPLACE_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "MARKETPLACE_KAFKA__POLL_INTERVAL_SECONDS": "0.05",
    }
    root = Path(__file__).parents[2]
    relay = subprocess.Popen([sys.executable, "-m", "notifications.relay"], cwd=root, env=env)
    try:
        write_lifecycles(1)
        wait_for(all_delivered, 20, "the relay process to deliver")
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(timeout=15) == 0
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()


def test_only_one_relay_produces_at_a_time(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite: one file on one host, the lock is PostgreSQL's")
    settings = relay_settings("127.0.0.1:9")
    first, second = OutboxRelay(settings), OutboxRelay(settings)
    try:
        assert first._is_leader() and not second._is_leader()
        first.close()
        assert second._is_leader()
    finally:
        first.close()
        second.close()
