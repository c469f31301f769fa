"""Kafka plumbing of the outbox relay: client settings, the message an event becomes, the topic.

A message is a CloudEvent in structured mode (Kafka protocol binding): the value is the whole
JSON envelope stored in the outbox (`content-type: application/cloudevents+json`), the key is
the service id, so a service's events share a partition and keep their order. The `ce_*`
headers repeat the envelope's attributes, so consumers can route, filter and drop repeats
(by `ce_id`) without parsing the value.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from core.settings import KafkaSettings

CONTENT_TYPE = b"application/cloudevents+json; charset=utf-8"
# Envelope attributes repeated as headers. datacontenttype is left out: in the Kafka binding it
# is what `content-type` says, and ours describes the value (the envelope), not `data`.
HEADER_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "dataschemaversion")

log = logging.getLogger("marketplace.relay.kafka")


def producer_config(settings: KafkaSettings, client_id: str, on_error: Callable[[KafkaError], None]) -> dict[str, Any]:
    """An idempotent producer that never gives up on a message by itself (see notifications.relay)."""
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        # Infinite: librdkafka retries a message with its original sequence number until the
        # broker acknowledges it, so a lost ack never becomes a second copy. Rounds stop waiting
        # after delivery_timeout_seconds; the message stays with the producer.
        "message.timeout.ms": 0,
        "linger.ms": 5,
        # Find a broker that is back after an outage within a second (librdkafka's default: 10 s).
        "reconnect.backoff.max.ms": 1000,
        # The Java client's partitioner: the same key lands on the same partition from any client.
        "partitioner": "murmur2_random",
        # The relay creates the topic with its partition count; a broker that lost its state
        # must not get it back auto-created with the broker's defaults.
        "allow.auto.create.topics": False,
        "error_cb": on_error,
        "logger": log,
    }


def admin_config(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": f"{client_id}-admin",
        "reconnect.backoff.max.ms": 1000,
        "logger": log,
    }


def message_key(aggregate_id: str) -> bytes:
    return aggregate_id.encode()


def message_value(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def message_headers(payload: dict[str, Any]) -> list[tuple[str, str | bytes | None]]:
    headers: list[tuple[str, str | bytes | None]] = [
        (f"ce_{name}", str(payload[name]).encode()) for name in HEADER_ATTRIBUTES if payload.get(name)
    ]
    return [*headers, ("content-type", CONTENT_TYPE)]


def ensure_topic(admin: AdminClient, settings: KafkaSettings, timeout: float) -> str:
    """Create the topic if it is missing; returns its id (a new id means the topic was recreated).

    Raises KafkaException when the broker cannot be reached within `timeout` seconds.
    """
    try:
        return _topic_id(admin, settings.topic, timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise
    new = NewTopic(
        settings.topic, num_partitions=settings.topic_partitions, replication_factor=settings.topic_replication_factor
    )
    try:
        admin.create_topics([new], request_timeout=timeout, operation_timeout=timeout)[settings.topic].result()
        log.info("created topic %s (%d partitions)", settings.topic, settings.topic_partitions)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # created by someone else meanwhile
            raise
    return _topic_id(admin, settings.topic, timeout)


def _topic_id(admin: AdminClient, topic: str, timeout: float) -> str:
    description = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout)[topic].result()
    return str(description.topic_id)
