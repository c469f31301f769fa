"""The relay's producer session: what it holds, what the broker reported, and when to start afresh."""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from core.settings import KafkaSettings
from notifications import kafka

log = logging.getLogger("marketplace.relay")
ADMIN_TIMEOUT_SECONDS = 5.0
BROKER_TROUBLE = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE}


class RelayProducer:
    """An idempotent producer and the outbox rows (by id) it was given.

    `holding`: handed over, no report yet (the relay never hands them over again); `acked` and
    `errors`: reported, not yet recorded in the database. A fatal error, or a topic that came back
    with a new id (the broker lost its state, and with it our producer id), starts a new session:
    what the old one held becomes an error, to be produced again by the new one.
    """

    def __init__(self, settings: KafkaSettings, client_id: str) -> None:
        self.settings = settings
        self._client_id = client_id
        self._admin = AdminClient(kafka.admin_config(settings, client_id))
        self._producer: Producer | None = None
        self.holding: set[int] = set()
        self.acked: set[int] = set()
        self.errors: dict[int, str] = {}
        self._topic_id: str | None = None
        self._check_topic = True
        self._fatal: KafkaError | None = None

    def prepare(self) -> Producer:
        """The session's producer, ready for a round: started (and the topic checked) on first use
        and after broker trouble, replaced after a fatal error; reports since the last round served."""
        if self._fatal is not None:
            self._new_session(f"fatal producer error: {self._fatal}")
        if self._check_topic:
            self._verify_topic()
        if self._producer is None:
            self._producer = Producer(kafka.producer_config(self.settings, self._client_id, self._on_error))
        self._producer.poll(0)
        return self._producer

    def send(self, producer: Producer, row_id: int, aggregate_id: str, payload: dict[str, Any]) -> bool:
        """Hand one event over; False when the client refused it (recorded in `errors`).

        Raises BufferError when the producer's queue is full.
        """
        try:
            producer.produce(
                self.settings.topic,
                key=kafka.message_key(aggregate_id),
                value=kafka.message_value(payload),
                headers=kafka.message_headers(payload),
                on_delivery=partial(self._on_delivery, row_id),
            )
        except KafkaException as exc:  # refused before sending (too large, ...)
            self.errors[row_id] = str(exc.args[0])
            return False
        self.holding.add(row_id)
        return True

    def wait(
        self, producer: Producer, row_ids: set[int], timeout: float, stopping: threading.Event, grace: float
    ) -> None:
        """Serve delivery reports until those of `row_ids` are in, `timeout` is up or a fatal error;
        once `stopping` is set, for at most `grace` more seconds (the broker may be away)."""
        deadline = time.monotonic() + timeout
        while row_ids & self.holding and self._fatal is None:
            if stopping.is_set():
                deadline = min(deadline, time.monotonic() + grace)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            producer.poll(min(left, 0.1))

    def recorded(self, acked: set[int], failed: set[int]) -> None:
        """Forget reports now written to the database."""
        self.acked -= acked
        for row_id in failed:
            self.errors.pop(row_id, None)

    def close(self, flush_seconds: float) -> None:
        """Flush what the producer holds for at most `flush_seconds`; drop the rest, unrecorded:
        it was never acknowledged, so it stays pending for the next relay (no attempt lost)."""
        if self._producer is None:
            return
        self._producer.flush(flush_seconds)
        self._producer.purge(in_queue=True, in_flight=True)
        self._producer.poll(0)
        self._producer = None
        self.holding.clear()
        self.errors.clear()

    def _on_delivery(self, row_id: int, error: KafkaError | None, _message: Message) -> None:
        self.holding.discard(row_id)
        if error is None:
            self.acked.add(row_id)
        else:
            self.errors[row_id] = f"{error.name()}: {error.str()}"

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error
        elif error.code() in BROKER_TROUBLE:
            self._check_topic = True  # the broker may come back without the topic (memory storage)
        log.debug("kafka: %s", error)

    def _verify_topic(self) -> None:
        timeout = min(ADMIN_TIMEOUT_SECONDS, self.settings.delivery_timeout_seconds)
        try:
            topic_id = kafka.ensure_topic(self._admin, self.settings, timeout)
        except KafkaException as exc:
            log.warning("topic %s not verified (broker unreachable?): %s", self.settings.topic, exc.args[0])
            return
        finally:
            self._admin.poll(0)  # serves the admin client's log lines
        if self._topic_id is not None and topic_id != self._topic_id:
            self._new_session(f"topic {self.settings.topic} was recreated: the broker lost its state")
        self._topic_id, self._check_topic = topic_id, False

    def _new_session(self, reason: str) -> None:
        log.warning("new producer session: %s", reason)
        old, self._producer, self._fatal = self._producer, None, None
        if old is not None:
            old.purge(in_queue=True, in_flight=True)
            old.poll(0)  # the purge's reports
        for row_id in self.holding | set(self.errors):
            self.errors[row_id] = reason
        self.holding.clear()
